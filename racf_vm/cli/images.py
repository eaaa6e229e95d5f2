"""``racf-vm images publish|sync|prepare``: the administrator's side of image distribution.

Add to the main CLI with ``cli.add_command(images_group)``.
"""

import os
import sys
from typing import Optional

import click

from racf_vm.core.errors import RacfError, TemporaryError
from racf_vm.images.codecs import CODECS
from racf_vm.images.stream import Progress


class _TerminalProgress:
    """One click progress bar per image, only when stderr is a terminal (never in jobs)."""

    def __init__(self):
        self.bar = None

    def for_image(self, name: str) -> Progress:
        self.close()
        state = {"name": name}

        def update(nbytes: int, total: Optional[int]) -> None:
            if self.bar is None:
                self.bar = click.progressbar(length=total, label=state["name"], file=sys.stderr,
                                             show_pos=total is None)
                self.bar.__enter__()
            self.bar.update(nbytes)

        return update

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


@click.group("images")
def images_group():
    """Publish images to the web server and keep this node's cache in step with it."""


@images_group.command("publish")
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.option("--compression", type=click.Choice(sorted(CODECS)), default="gzip",
              show_default=True)
@click.option("--level", type=int, default=None, help="Compression level (codec default).")
@click.option("--checksum-file", default="SHA256SUMS", show_default=True)
def publish_cmd(src, out, compression, level, checksum_file):
    """Compress every image in SRC into OUT and write OUT's checksum list last."""
    from racf_vm.images.publish import publish

    report = publish(src, out, codec=compression, level=level, checksum_file=checksum_file)
    click.echo(f"published: {len(report.compressed)} compressed, {len(report.unchanged)} "
               f"unchanged, {len(report.removed)} removed")


@images_group.command("sync")
@click.option("--source", "source_url", default=None, help="Base URL (default: [images] source_url).")
@click.option("--cache", "cache_dir", default=None, help="Cache directory (default: [images] cache_dir).")
@click.pass_obj
def sync_cmd(obj, source_url, cache_dir):
    """Fetch changed and missing images, drop withdrawn ones, verify everything."""
    from racf_vm.images.sync import sync

    progress = _TerminalProgress() if sys.stderr.isatty() else None
    try:
        report = sync(obj.config.images, source_url=source_url, cache_dir=cache_dir,
                      progress=progress.for_image if progress else None,
                      sizes=_catalog_sizes(obj.config))
    finally:
        if progress:
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
        if entry.size:
            sizes[entry.sha256] = min(entry.size, sizes.get(entry.sha256, entry.size))
    return sizes


def _prepare_images(cfg, names=()) -> int:
    """Prepare the named images (or every one whose base file is here); one line each."""
    from racf_vm.guest.install import read_runner
    from racf_vm.images import catalog, imageheader, prepare
    from racf_vm.trust import pathtrust
    from racf_vm.vm import accel

    cat = catalog.load_catalog(cfg.paths.catalog_dir, check_trust=pathtrust.check_trusted_file)
    entries = [cat.lookup(n) for n in names] if names else [cat[n] for n in cat if os.path.exists(cat[n].path)]
    runner = read_runner(cfg.paths.runner)
    kind = accel.choose_accel(cfg.libvirt.accel, cfg.paths.state_dir, cfg.libvirt.emulator)
    failures = 0
    for entry in entries:
        try:
            base = imageheader.validate_base_image(entry.path, entry.format)
            layer = prepare.ensure_prepared(entry, base, runner, cfg, kind)
            click.echo(f"prepared: {entry.name} ({os.path.basename(layer.path)})")
        except RacfError as exc:
            click.echo(f"not prepared: {entry.name}: {exc.message}")
            failures += 1
    return failures
