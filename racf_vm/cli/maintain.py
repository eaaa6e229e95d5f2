"""``racf-vm images maintain MASTER --run CMD OUT`` (racf_vm.job.maintain)."""

import os

import click

from racf_vm.cli.imageadd import boot_given, boot_options, template_from_options
from racf_vm.cli.images import images_group, signers_of
from racf_vm.cli.progress import Reporter
from racf_vm.core.errors import ConfigError
from racf_vm.images.codecs import CODECS


def _template(cfg, master: str, name: str, kw):
    """Boot and context from the options, else from the catalog entry ``name``."""
    if boot_given(kw):
        return template_from_options(name, master, kw)
    from racf_vm.images import catalog
    from racf_vm.trust import pathtrust

    cat = catalog.load_catalog(cfg.paths.catalog_dir, check_trust=pathtrust.check_trusted_file)
    if name not in cat:
        raise ConfigError(f"no catalog entry {name!r} to take the boot from: pass --name, or "
                          "--kernel/--initrd or --bootloader")
    entry = cat[name]
    if kw.get("fmt") and kw["fmt"] != entry.format:
        raise ConfigError(f"--format {kw['fmt']} but the catalog says {entry.format}")
    return entry


@images_group.command("maintain")
@click.argument("master", type=click.Path(exists=True, dir_okay=False))
@click.option("--run", "command", required=True, help="Shell command run as root in the guest.")
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.option("--name", default=None,
              help="Catalog entry to take the boot from [default: MASTER's name up to its first dot].")
@boot_options
@click.option("--key", "keys", multiple=True, type=click.Path(dir_okay=False),
              help="Sign the list with this private key (repeatable); default: [images] signing_key.")
@click.option("--compression", type=click.Choice(sorted(CODECS)), default="gzip", show_default=True)
@click.option("--level", type=int, default=None, help="Compression level (codec default).")
@click.option("--cpus", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--memory", "memory_mib", type=click.IntRange(128, 1 << 20), default=1024,
              show_default=True, help="MiB.")
@click.option("--timeout", type=click.FloatRange(1, 7 * 86400), default=4 * 3600.0,
              show_default=True, help="Seconds the command may run.")
@click.pass_obj
def maintain_cmd(obj, master, command, out, name, keys, compression, level, cpus, memory_mib,
                 timeout, **kw):
    """Boot MASTER writable, run CMD as root in it, then commit, compress, sign and publish
    it into OUT. A failing CMD leaves MASTER unchanged."""
    from racf_vm.job.maintain import Options, Phases, maintain

    cfg = obj.config
    master = os.path.abspath(master)
    name = name or os.path.basename(master).split(".")[0]
    template = _template(cfg, master, name, kw)
    signers = signers_of(cfg.images, keys)
    if not signers:
        raise ConfigError("no signing key: pass --key KEY or set [images] signing_key "
                          "(racf-vm images keygen makes one)")
    shown = Reporter()
    options = Options(command=command, out=os.path.abspath(out), signers=signers,
                      codec=compression, level=level, cpus=cpus, memory_mib=memory_mib,
                      timeout=timeout)
    try:
        result = maintain(cfg, master, template, options, Phases(shown.phase, shown.bar))
    finally:
        shown.close()
    click.echo(f"maintained: {master}: sha256 {result.old_sha256[:16]} -> {result.new_sha256}")
    click.echo(f"published: {os.path.join(options.out, result.published)}, list serial "
               f"{result.serial}")
