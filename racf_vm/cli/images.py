"""``racf-vm images keygen|publish|sync|prepare``: the administrator's side of image
distribution (``add``, ``list``: racf_vm.cli.imageadd; ``maintain``: racf_vm.cli.maintain).

Add to the main CLI with ``cli.add_command(images_group)``.
"""

import os

import click

from racf_vm.cli.progress import Reporter
from racf_vm.core.errors import ConfigError, RacfError, TemporaryError
from racf_vm.images.codecs import CODECS


@click.group("images")
def images_group():
    """Publish images to the web server and keep this node's cache in step with it."""


@images_group.command("keygen")
@click.argument("key", type=click.Path(dir_okay=False))
@click.option("--comment", default="racf-vm images", show_default=True)
def keygen_cmd(key, comment):
    """Make the site's image signing key: KEY (private, 0600) and KEY.pub.

    Keep KEY on the publisher only; put the line of KEY.pub into every node's
    [images] trusted_keys.
    """
    from racf_vm.images.signkeys import generate_keypair

    public = generate_keypair(os.path.abspath(key), comment)
    click.echo(f"private key: {os.path.abspath(key)} (keep it on the publisher, mode 0600)")
    click.echo(f"public key:  {os.path.abspath(key)}.pub ({public.fingerprint})")
    click.echo("on every node, in [images] of racf-vm.toml:")
    click.echo(f'trusted_keys = ["{public.line}"]')


def site_images_config(obj):
    """[images] of the site config, or None where there is none (a publisher may have no
    racf-vm.toml; a config that exists must load)."""
    if obj is None or not os.path.lexists(obj.config_path):
        return None
    return obj.config.images


def signers_of(images_cfg, keys) -> list:
    """The private keys to sign with: --key (repeatable), else [images] signing_key."""
    from racf_vm.images.signkeys import load_private_key

    paths = list(keys) or ([images_cfg.signing_key] if images_cfg and images_cfg.signing_key else [])
    if len(paths) > 4:
        raise ConfigError("sign with at most 4 keys")
    return [load_private_key(os.path.abspath(p)) for p in paths]


@images_group.command("publish")
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.option("--compression", type=click.Choice(sorted(CODECS)), default="gzip",
              show_default=True)
@click.option("--level", type=int, default=None, help="Compression level (codec default).")
@click.option("--checksum-file", default=None, help="Default: [images] checksum_file.")
@click.option("--key", "keys", multiple=True, type=click.Path(dir_okay=False),
              help="Sign the list with this private key (repeat for a key change); "
                   "default: [images] signing_key.")
@click.option("--unsigned", is_flag=True, help="Write an unsigned list (nodes with "
              "[images] trusted_keys refuse it).")
@click.pass_obj
def publish_cmd(obj, src, out, compression, level, checksum_file, keys, unsigned):
    """Compress every image in SRC into OUT and write OUT's checksum list last, signed."""
    from racf_vm.images.publish import publish

    images_cfg = None if (keys or unsigned) and checksum_file else site_images_config(obj)
    signers = [] if unsigned else signers_of(images_cfg, keys)
    if not signers and not unsigned:
        raise ConfigError("no signing key: pass --key KEY (racf-vm images keygen makes one), "
                          "set [images] signing_key, or pass --unsigned")
    checksum_file = checksum_file or (images_cfg.checksum_file if images_cfg else "SHA256SUMS")
    report = publish(src, out, codec=compression, level=level, checksum_file=checksum_file,
                     signers=signers)
    click.echo(f"published: {len(report.compressed)} compressed, {len(report.unchanged)} "
               f"unchanged, {len(report.removed)} removed"
               + (f"; list signed, serial {report.serial}" if signers else "; list NOT signed"))


@images_group.command("sync")
@click.option("--source", "source_url", default=None, help="Base URL (default: [images] source_url).")
@click.option("--cache", "cache_dir", default=None, help="Cache directory (default: [images] cache_dir).")
@click.pass_obj
def sync_cmd(obj, source_url, cache_dir):
    """Fetch changed and missing images, drop withdrawn ones, verify everything."""
    from racf_vm.images.sync import sync

    progress = Reporter()
    try:
        report = sync(obj.config.images, source_url=source_url, cache_dir=cache_dir,
                      progress=progress.for_image, sizes=_catalog_sizes(obj.config))
    finally:
        progress.close()
    busy = (f", {len(report.busy)} kept while jobs use them ({', '.join(report.busy)})"
            if report.busy else "")
    click.echo(f"images: {len(report.fetched)} fetched, {len(report.verified)} verified, "
               f"{len(report.removed)} removed, {report.unchanged} unchanged{busy}")
    # a job must never be the first to need a preparation it could have been spared
    if _prepare_images(obj.config):
        raise TemporaryError("some images could not be prepared (see above); jobs will try again")


@images_group.command("prepare")
@click.argument("names", nargs=-1)
@click.pass_obj
def prepare_cmd(obj, names):
    """Prepare catalog images for jobs (all whose base is in the cache, or NAMES)."""
    failures = _prepare_images(obj.config, names)
    if failures:
        raise TemporaryError(f"{failures} image(s) could not be prepared")


def _catalog_sizes(cfg) -> dict[str, int]:
    """sha256 -> exact size, for the catalog entries that give one (tighter download caps).
    A catalog that does not load gives none here; preparing the images reports it."""
    from racf_vm.images import catalog
    from racf_vm.trust import pathtrust

    try:
        cat = catalog.load_catalog(cfg.paths.catalog_dir, check_trust=pathtrust.check_trusted_file)
    except RacfError:
        return {}
    sizes: dict[str, int] = {}
    for name in cat:
        entry = cat[name]
        if entry.size and not entry.follow:
            sizes[entry.sha256] = min(entry.size, sizes.get(entry.sha256, entry.size))
    return sizes


def _prepare_images(cfg, names=()) -> int:
    """Prepare the named images (or every one whose base file is here); one line each."""
    from racf_vm.guest.install import read_runner
    from racf_vm.images import catalog, imageheader, jobimage, prepare
    from racf_vm.trust import pathtrust
    from racf_vm.vm import accel

    cat = catalog.load_catalog(cfg.paths.catalog_dir, check_trust=pathtrust.check_trusted_file)
    wanted = [cat.lookup(n) for n in names] if names else [cat[n] for n in cat]
    entries, failures = [], 0
    for entry in wanted:  # as the next job would run it, from what the cache has now
        resolved = jobimage.resolve_offline(entry, cfg)
        if resolved is not None and os.path.exists(resolved.path):
            entries.append(resolved)
        elif names:
            click.echo(f"not prepared: {entry.name}: not in the cache (run racf-vm images sync)")
            failures += 1
    runner = read_runner(cfg.paths.runner)
    kind = accel.choose_accel(cfg.libvirt.accel, cfg.paths.state_dir, cfg.libvirt.emulator)
    for entry in entries:
        try:
            base = imageheader.validate_base_image(entry.path, entry.format)
            layer = prepare.ensure_prepared(entry, base, runner, cfg, kind)
            click.echo(f"prepared: {entry.name} ({os.path.basename(layer.path)})")
        except RacfError as exc:
            click.echo(f"not prepared: {entry.name}: {exc.message}")
            failures += 1
    return failures
