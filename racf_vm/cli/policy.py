"""``racf-vm policy check|explain``: the site's trust policy, checked and explained."""

import os
import sys

import click

from racf_vm.core.errors import ConfigError, RacfError
from racf_vm.images import catalog
from racf_vm.trust import pathtrust


@click.group("policy")
def policy_group():
    """Check or explain the site's trust policy."""


@policy_group.command("check")
@click.pass_obj
def policy_check(obj):
    """Validate config, catalog and file trust; one line per problem."""
    problems = list(policy_problems(obj))
    for line in problems:
        click.echo(line)
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) found")
    click.echo("policy: ok")


def _wrapper_sys_path():
    """sys.path as the wrapper sees it (python -I, cwd /), not this CLI's own."""
    import json

    from racf_vm.core import runcmd

    out = runcmd.run([sys.executable, "-I", "-B", "-c", "import json, sys; print(json.dumps(sys.path))"],
                     timeout=30, what="python -I")
    return json.loads(out.stdout)


def policy_problems(obj):
    """Every problem found, one line each: ``FILE: reason``. Checking goes on after a
    problem wherever the rest can still be checked."""
    from racf_vm.images import imageheader
    from racf_vm.trust import qemuconf, selfcheck

    for check in (selfcheck.check_interpreter, selfcheck.check_package,
                  lambda: selfcheck.check_sys_path(_wrapper_sys_path())):
        try:
            check()
        except RacfError as exc:
            yield f"{sys.executable}: {exc.message}"
    try:
        qemuconf.check_qemu_conf()
    except RacfError as exc:
        yield exc.message  # already starts with the qemu.conf path
    try:
        cfg = obj.config
    except RacfError as exc:
        yield f"{obj.config_path}: {exc.message}"
        return
    try:
        pathtrust.check_trusted_file(cfg.paths.runner)
    except RacfError as exc:
        yield f"{cfg.paths.runner}: {exc.message}"
    if cfg.network.trusted_dhcp_hostsdir:
        try:
            pathtrust.check_trusted_dir(cfg.network.trusted_dhcp_hostsdir)
        except RacfError as exc:
            yield f"{cfg.network.trusted_dhcp_hostsdir}: {exc.message}"
    directory = cfg.paths.catalog_dir
    try:
        pathtrust.check_trusted_dir(directory)
        files = list(catalog.scan_catalog(directory, check_trust=pathtrust.check_trusted_file))
    except RacfError as exc:
        yield exc.message if exc.message.startswith(directory + ":") else f"{directory}: {exc.message}"
        return
    entries = 0
    for item in files:
        source = item.source
        if item.error is not None:
            msg = item.error.message
            yield msg if msg.startswith(source + ":") else f"{source}: {msg}"
            continue
        entry = item.entry
        entries += 1
        if entry.checksum_is_placeholder:
            yield f"{source}: sha256 is the example placeholder (all zeros); put the image's real checksum"
        if entry.follow:
            yield from _follow_problems(cfg, entry, source)
        for key, path in (("path", entry.path), ("boot.kernel", entry.boot.kernel),
                          ("boot.initrd", entry.boot.initrd)):
            if not path or (key == "path" and entry.follow):
                continue
            try:
                pathtrust.check_trusted_file(path)
            except RacfError as exc:
                yield f"{source}: {key}: {exc.message}"
        if entry.follow:
            continue  # its file is whichever version the server's signed list names
        try:
            imageheader.validate_base_image(entry.path, entry.format)
        except RacfError as exc:
            yield f"{source}: path: {exc.message}"
    if entries == 0:
        yield (f"{directory}: the image catalog has no images; copy an example from {_examples_dir(cfg)} "
               f"to {directory}/NAME.toml, set its path and sha256 (sha256sum IMAGE), "
               "then run racf-vm policy check; or let racf-vm images add FILE --name NAME "
               "--trust trusted ... do it")


def _follow_problems(cfg, entry, source):
    from racf_vm.images.jobimage import cache_managed

    if not cache_managed(entry, cfg):
        yield f"{source}: sha256 = \"follow\" needs path in the image cache ({cfg.images.cache_dir})"
    if not cfg.images.source_url:
        yield f"{source}: sha256 = \"follow\" needs [images] source_url"
    if not cfg.images.trusted_keys:
        yield (f"{source}: sha256 = \"follow\" needs [images] trusted_keys (the server's list must "
               "be signed: racf-vm images keygen)")


def _examples_dir(cfg) -> str:
    """Where `make install` put the example catalog entries (beside the guest runner)."""
    installed = os.path.join(os.path.dirname(os.path.dirname(cfg.paths.runner)), "examples")
    return installed if os.path.isdir(installed) else "images.d/ of the racf-vm source tree"


@policy_group.command("explain")
@click.argument("image")
@click.pass_obj
def policy_explain(obj, image):
    """Show how jobs asking for IMAGE are run: trust, network, sizing."""
    cfg = obj.config
    cat = catalog.load_catalog(cfg.paths.catalog_dir, check_trust=pathtrust.check_trusted_file)
    entry = cat.lookup(image)
    s = cfg.sizing
    click.echo(f"image:    {entry.name} ({entry.format}, {entry.path})")
    click.echo(f"trust:    {entry.trust}")
    click.echo("credentials: " + ("passed to the guest (tokens, proxies, Kerberos caches)" if entry.credentials
                                  else "withheld: none of the job's tokens, proxies or Kerberos caches reach the guest"))
    if entry.trust == "trusted":
        net = cfg.network
        click.echo(f"network:  {'site bridge ' + net.trusted_bridge + ' (the guest root has reserved ports there)' if net.trusted_bridge else 'none (no network interface)'}")
        if net.trusted_bridge:
            click.echo(f"mac:      {net.trusted_mac_prefix}:<seat> (the wrapper's pid; with a reservation "
                       f"{net.trusted_mac_prefix}:80:00:00 + the address's index)")
            click.echo("address:  " + (f"fixed, from {net.trusted_pool} (a file per job in {net.trusted_dhcp_hostsdir})"
                                       if net.trusted_pool else "from the site's DHCP (no reservation)"))
        click.echo("firewall: no per-job rules (trusted images run the job as the job user, never root)")
    else:
        import netpolicy

        click.echo("network:  untrusted NAT network (guest source ports below 1024 remapped)")
        for line in netpolicy.explain(cfg):
            click.echo(f"          {line}")
        click.echo("firewall: the per-job rules above, installed before the guest boots and removed "
                   "after it is gone")
    if entry.checksum_is_placeholder:
        click.echo("checksum: PLACEHOLDER (all zeros): jobs asking for this image are refused")
    elif entry.follow:
        keys = len(cfg.images.trusted_keys)
        click.echo(f"checksum: follows the server: each job runs the version the newest list "
                   f"signed by one of the {keys} trusted key(s) names (racf-vm images list)")
    else:
        click.echo(f"checksum: sha256 {entry.sha256}")
    click.echo(
        f"sizing:   CPUs from the slot's cgroup; memory = min(slot memory, CPUs x "
        f"{s.memory_per_core_mib} MiB); at least {s.min_memory_mib} MiB and {s.min_cpus} CPU(s)"
    )
    boot = entry.boot
    how = f"kernel {boot.kernel}, initrd {boot.initrd}" if boot.method == "kernel" else "its own bootloader"
    click.echo(f"boot:     {how}")
    ctx = entry.context
    click.echo(f"runner:   installed once per image version in a prepared layer ({ctx.filesystem}, "
               f"{ctx.fstype}, started by {ctx.hook}), by libguestfs as {cfg.guestfs.user}")
    click.echo("context:  each job's on a read-only disk of its own (a tar stream, never mounted)")
