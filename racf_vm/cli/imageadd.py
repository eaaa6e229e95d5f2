"""``racf-vm images add FILE`` and ``racf-vm images list``: a first image without editing
a file by hand, and what the node holds of each catalog image."""

import os

import click

from racf_vm.cli.images import images_group
from racf_vm.cli.progress import Reporter
from racf_vm.core.errors import ConfigError, TemporaryError
from racf_vm.images.catalog import FSTYPES, HOOKS, BootSpec, ContextSpec, ImageEntry


def boot_options(func):
    """The options that say how an image boots and where its runner goes (add, maintain)."""
    options = [
        click.option("--trust", type=click.Choice(["trusted", "untrusted"]), default=None,
                     help="trusted: site network; untrusted: the NAT jail."),
        click.option("--format", "fmt", type=click.Choice(["qcow2", "raw"]), default=None,
                     help="Default: from the file name (.qcow2, .raw, .img)."),
        click.option("--kernel", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Direct kernel boot: the kernel (copied beside the image)."),
        click.option("--initrd", type=click.Path(exists=True, dir_okay=False), default=None),
        click.option("--cmdline", default="", help="Kernel command line (direct boot)."),
        click.option("--bootloader", is_flag=True, help="The disk boots itself (no --kernel)."),
        click.option("--filesystem", default=None,
                     help="Guest root filesystem as libguestfs names it [default: /dev/sda]."),
        click.option("--fstype", type=click.Choice(FSTYPES), default=None,
                     help="[default: ext4]"),
        click.option("--hook", type=click.Choice(HOOKS), default=None,
                     help="How the guest starts the runner [default: rc.local]."),
        click.option("--credentials/--no-credentials", default=None,
                     help="Pass the job's credentials [default: trusted images only]."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def boot_given(kw) -> bool:
    return bool(kw.get("kernel") or kw.get("bootloader"))


def template_from_options(name: str, path: str, kw) -> ImageEntry:
    """The catalog entry the options describe (path and sha256 still to be filled)."""
    fmt = kw.get("fmt")
    if fmt is None:
        ext = os.path.splitext(path)[1]
        fmt = {".qcow2": "qcow2", ".raw": "raw", ".img": "raw"}.get(ext)
        if fmt is None:
            raise ConfigError(f"{path}: say its format with --format qcow2|raw (never probed)")
    if kw.get("kernel") and kw.get("bootloader"):
        raise ConfigError("give --kernel/--initrd or --bootloader, not both")
    if kw.get("kernel"):
        if not kw.get("initrd"):
            raise ConfigError("direct kernel boot needs --initrd too")
        boot = BootSpec("kernel", os.path.abspath(kw["kernel"]), os.path.abspath(kw["initrd"]),
                        kw.get("cmdline") or "")
    elif kw.get("bootloader"):
        if kw.get("initrd") or kw.get("cmdline"):
            raise ConfigError("--initrd and --cmdline are for direct kernel boot (--kernel)")
        boot = BootSpec("bootloader")
    else:
        raise ConfigError("say how the image boots: --kernel K --initrd I [--cmdline C], or "
                          "--bootloader")
    trust = kw.get("trust") or "trusted"
    credentials = kw.get("credentials")
    context = ContextSpec(kw.get("filesystem") or "/dev/sda", kw.get("fstype") or "ext4",
                          kw.get("hook") or "rc.local")
    return ImageEntry(name=name, trust=trust, path="/", format=fmt, sha256="", boot=boot,
                      context=context,
                      credentials=trust == "trusted" if credentials is None else credentials)


@images_group.command("add")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", required=True, help="The name jobs ask for (-i NAME).")
@boot_options
@click.option("--replace", is_flag=True, help="Overwrite an existing catalog entry of that name.")
@click.option("--prepare/--no-prepare", default=True, show_default=True,
              help="Prepare the image for jobs now (else the first job does).")
@click.pass_obj
def add_cmd(obj, file, name, replace, prepare, **kw):
    """Copy FILE into this node's image cache and write its catalog entry."""
    import dataclasses

    from racf_vm.cli.images import _prepare_images
    from racf_vm.images import catalogwrite
    from racf_vm.images.addimage import add_image

    if not kw.get("trust"):
        raise ConfigError("say whether the image is trusted: --trust trusted|untrusted")
    cfg = obj.config
    template = template_from_options(name, file, kw)
    catalogwrite.check_template(dataclasses.replace(
        template, path=os.path.join(cfg.images.cache_dir, f"{name}.{template.format}")))
    shown = Reporter()
    try:
        entry, written = add_image(cfg, os.path.abspath(file), template, replace=replace,
                                   progress=shown.bar(f"copying {os.path.basename(file)}"))
    finally:
        shown.close()
    click.echo(f"added: {entry.name} ({entry.trust}, {entry.format}, {entry.size} bytes, "
               f"sha256 {entry.sha256})")
    click.echo(f"image: {entry.path}")
    click.echo(f"catalog: {written}")
    if prepare and _prepare_images(cfg, [entry.name]):
        raise TemporaryError(f"{entry.name} is in the catalog but could not be prepared; the "
                             "first job will try again")


@images_group.command("list")
@click.pass_obj
def list_cmd(obj):
    """Each catalog image with its state on this node."""
    from racf_vm.guest.install import read_runner
    from racf_vm.images import catalog
    from racf_vm.images.status import image_status
    from racf_vm.trust import pathtrust

    cfg = obj.config
    cat = catalog.load_catalog(cfg.paths.catalog_dir, check_trust=pathtrust.check_trusted_file)
    with open("/proc/locks") as f:
        locks_text = f.read()
    rows = image_status(cfg, cat, read_runner(cfg.paths.runner), locks_text)
    header = ("NAME", "TRUST", "CHECKSUM", "FILE", "SIZE", "IN USE", "PREPARED")
    table = [header] + [_row(r) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
    if not rows:
        click.echo("(no images: racf-vm images add FILE --name NAME --trust trusted ...)")


def _row(r) -> tuple:
    how = "follows" if r.follows else "pinned"
    checksum = f"{how} {r.sha256[:16]}" if r.sha256 else f"{how} (no verified list yet)"
    if not r.present:
        state = "missing"
    elif not r.cached:
        state = "present (outside the cache)"
    else:
        state = "present, verified" if r.verified else "present, NOT verified"
    size = f"{r.size / (1 << 20):.1f} MiB" if r.size is not None else "-"
    use = f"{r.in_use} job(s)" if r.in_use else "no"
    if r.old_versions:
        use += f", {r.old_versions} older version(s) kept"
    return (r.name, r.trust, checksum, state, size, use, "yes" if r.prepared else "no")
