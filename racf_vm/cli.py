"""The administrator's command line: ``racf-vm gc|doctor|policy|images``.

One exit path: every RacfError becomes one line ``racf-vm: ...`` and its sysexits status;
``-v`` adds the detail.
"""

import logging
import os
import sys

import click

from . import catalog, config as config_mod, errors, pathtrust
from .errors import RacfError

DEFAULT_CONFIG = "/etc/racf-vm/racf-vm.toml"


class _Ctx:
    def __init__(self, config_path: str, verbose: bool):
        self.config_path = config_path
        self.verbose = verbose
        self._config = None

    @property
    def config(self):
        if self._config is None:
            pathtrust.check_trusted_file(self.config_path)
            self._config = config_mod.load_config(self.config_path)
        return self._config


@click.group()
@click.option("--config", "config_path", default=DEFAULT_CONFIG, show_default=True, help="Site configuration file.")
@click.option("-v", "--verbose", is_flag=True, help="Show details and debug logging.")
@click.pass_context
def cli(ctx, config_path, verbose):
    """Boot per-job virtual machines for HTCondor vanilla jobs (administration)."""
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if verbose else logging.INFO,
        format="racf-vm: %(message)s",
    )
    ctx.obj = _Ctx(config_path, verbose)


@cli.command()
@click.pass_obj
def gc(obj):
    """Remove domains and job directories whose wrapper is gone."""
    from . import domain, gc as gc_mod

    cfg = obj.config
    conn = domain.open_connection(cfg.libvirt.uri, cfg.timeouts.libvirt_connect)
    try:
        report = gc_mod.collect(conn, cfg.paths.state_dir, cfg)
    finally:
        conn.close()
    net = report.net
    click.echo(
        f"removed {len(report.domains)} domain(s), {len(report.job_dirs)} job dir(s), "
        f"{len(net.rules)} job rule set(s), {len(net.reservations)} reservation(s); "
        f"{len(report.kept) + len(net.kept)} still in use"
    )


@cli.group()
def policy():
    """Check or explain the site's trust policy."""


@policy.command("check")
@click.pass_obj
def policy_check(obj):
    """Validate config, catalog and file trust; one line per problem."""
    problems = list(_policy_problems(obj))
    for line in problems:
        click.echo(line)
    if problems:
        raise errors.ConfigError(f"{len(problems)} problem(s) found")
    click.echo("policy: ok")


def _wrapper_sys_path():
    """sys.path as the wrapper sees it (python -I, cwd /), not this CLI's own."""
    import json

    from . import runcmd

    out = runcmd.run([sys.executable, "-I", "-B", "-c", "import json, sys; print(json.dumps(sys.path))"],
                     timeout=30, what="python -I")
    return json.loads(out.stdout)


def _policy_problems(obj):
    """Every problem found, one line each: ``FILE: reason``. Checking goes on after a
    problem wherever the rest can still be checked."""
    from . import imageheader, libvirt_policy, selfcheck

    for check in (selfcheck.check_interpreter, selfcheck.check_package,
                  lambda: selfcheck.check_sys_path(_wrapper_sys_path())):
        try:
            check()
        except RacfError as exc:
            yield f"{sys.executable}: {exc.message}"
    try:
        libvirt_policy.check_qemu_conf()
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
    directory = cfg.paths.catalog_dir
    try:
        pathtrust.check_trusted_dir(directory)
        names = sorted(os.listdir(directory))
    except RacfError as exc:
        yield f"{directory}: {exc.message}"
        return
    except OSError as exc:
        yield f"{directory}: cannot list the image catalog: {exc.strerror}"
        return
    entries = 0
    for filename in names:
        if not filename.endswith(".toml") or filename.startswith("."):
            continue
        source = os.path.join(directory, filename)
        try:
            pathtrust.check_trusted_file(source)
            dirfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                data = catalog._read_catalog_file(dirfd, filename, source)
            finally:
                os.close(dirfd)
            entry = catalog.parse_image_entry(data, source)
        except RacfError as exc:
            msg = exc.message
            yield msg if msg.startswith(source + ":") else f"{source}: {msg}"
            continue
        entries += 1
        if entry.checksum_is_placeholder:
            yield f"{source}: sha256 is the example placeholder (all zeros); put the image's real checksum"
        for key, path in (("path", entry.path), ("boot.kernel", entry.boot.kernel),
                          ("boot.initrd", entry.boot.initrd)):
            if not path:
                continue
            try:
                pathtrust.check_trusted_file(path)
            except RacfError as exc:
                yield f"{source}: {key}: {exc.message}"
        try:
            imageheader.validate_base_image(entry.path, entry.format)
        except RacfError as exc:
            yield f"{source}: path: {exc.message}"
    if entries == 0:
        yield (f"{directory}: the image catalog has no images; copy an example from {_examples_dir(cfg)} "
               f"to {directory}/NAME.toml, set its path and sha256 (sha256sum IMAGE), "
               "then run racf-vm policy check")


def _examples_dir(cfg) -> str:
    """Where `make install` put the example catalog entries (beside the guest runner)."""
    installed = os.path.join(os.path.dirname(os.path.dirname(cfg.paths.runner)), "examples")
    return installed if os.path.isdir(installed) else "images.d/ of the racf-vm source tree"


@policy.command("explain")
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
    if entry.trust == "trusted":
        net = cfg.network.trusted_bridge
        click.echo(f"network:  {'site bridge ' + net if net else 'none (no network interface)'}")
        click.echo("firewall: no per-job rules (trusted images run the job as the job user, never root)")
    else:
        import netpolicy

        click.echo("network:  untrusted NAT network (guest source ports below 1024 remapped)")
        for line in netpolicy.explain(cfg):
            click.echo(f"          {line}")
        click.echo("firewall: none applied; racf-vm refuses untrusted images until the NAT network "
                   "and its rules (netpolicy) are installed")
    if entry.checksum_is_placeholder:
        click.echo("checksum: PLACEHOLDER (all zeros): jobs asking for this image are refused")
    else:
        click.echo(f"checksum: sha256 {entry.sha256}")
    click.echo(
        f"sizing:   CPUs from the slot's cgroup; memory = min(slot memory, CPUs x "
        f"{s.memory_per_core_mib} MiB); at least {s.min_memory_mib} MiB and {s.min_cpus} CPU(s)"
    )
    boot = entry.boot
    how = f"kernel {boot.kernel}, initrd {boot.initrd}" if boot.method == "kernel" else "its own bootloader"
    click.echo(f"boot:     {how}")
    click.echo(f"context:  written to {entry.context.filesystem} with libguestfs")


@cli.command()
@click.pass_obj
def doctor(obj):
    """Check that this node can run VM jobs; each failure says what fixes it."""
    from . import doctor as doctor_mod

    failures = 0
    for finding in doctor_mod.checks(obj.config_path, lambda: obj.config, lambda: _policy_problems(obj)):
        click.echo(finding.line())
        failures += not finding.ok
    if failures:
        raise errors.ConfigError(f"{failures} check(s) failed; fix them in the order shown, then run racf-vm doctor again")
    click.echo("doctor: this node can run racf-vm jobs")


def _register_subgroups() -> None:
    from .images.cli import images_group

    cli.add_command(images_group)


def main(argv=None) -> int:
    _register_subgroups()
    try:
        cli.main(args=argv, prog_name="racf-vm", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("racf-vm: aborted", err=True)
        return 1
    except click.ClickException as exc:
        click.echo(f"racf-vm: {exc.format_message()}; see racf-vm --help", err=True)
        return errors.EX_USAGE
    except RacfError as exc:
        click.echo(f"racf-vm: {exc.message}", err=True)
        if exc.detail and "-v" in (argv or sys.argv):
            click.echo(exc.detail, err=True)
        return exc.exit_status
    return 0


if __name__ == "__main__":
    sys.exit(main())
