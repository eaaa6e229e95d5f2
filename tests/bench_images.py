"""Image distribution bench (``make bench``): run as ``python -m tests.bench_images``.

1. Fetch + decompress + verify throughput for a 1 GiB compressible image served over
   loopback, beside ``curl | gzip -d | tee FILE | sha256sum``.
2. Time and HTTP requests to refresh an up-to-date cache of 100 images.
Only 127.0.0.1 is used. Needs root (the cache must be a trusted directory).
"""

import hashlib
import os
import shutil
import tempfile
import time

from racf_vm.config import ImagesConfig
from racf_vm.core import runcmd
from racf_vm.images.fetch import Client, HttpSettings
from racf_vm.images.fsutil import temp_file
from racf_vm.images.publish import publish
from racf_vm.images.sync import sync
from tests.support.imageserver import ImageServer

GIB = 1 << 30
TRUSTED_AREA = "/var/lib/racf-vm-test-images"


def _write_compressible(path: str, size: int) -> str:
    """A disk-image-like file: per MiB, 256 KiB of random bytes, text, then zeros."""
    digest = hashlib.sha256()
    text = (b"racf-vm bench line of a compressible image\n" * 8192)[: 256 << 10]
    with open(path, "wb") as f:
        for _ in range(size // (1 << 20)):
            block = os.urandom(256 << 10) + text + bytes(512 << 10)
            digest.update(block)
            f.write(block)
    return digest.hexdigest()


def _throughput(work: str) -> None:
    src, web, out = (os.path.join(work, d) for d in ("src", "web", "out"))
    for d in (src, web, out):
        os.mkdir(d)
    sha = _write_compressible(os.path.join(src, "bench.raw"), GIB)
    publish(src, web, level=1)
    os.unlink(os.path.join(src, "bench.raw"))
    compressed = os.path.getsize(os.path.join(web, "bench.raw.gz"))
    with ImageServer(web) as srv:
        url = srv.url + "bench.raw.gz"
        with Client(HttpSettings(timeout=60, deadline=600, retries=0)) as client:
            t0 = time.monotonic()
            with temp_file(out, "bench.raw") as tmp:
                got = client.download_image(url, tmp, "bench.raw", "gzip", sha, max_bytes=2 * GIB)
                tmp.commit(0o644)
            ours = time.monotonic() - t0
        assert got.sha256 == sha
        os.unlink(os.path.join(out, "bench.raw"))
        target = os.path.join(out, "shell.raw")
        t0 = time.monotonic()
        proc = runcmd.run(["/bin/bash", "-c",
                           f"set -o pipefail; curl -sf '{url}' | gzip -d | tee '{target}' | sha256sum"],
                          timeout=600)
        shell = time.monotonic() - t0
        assert proc.stdout.split()[0].decode() == sha
    mib = GIB / (1 << 20)
    print(f"fetch 1 GiB image ({compressed / (1 << 20):.0f} MiB gzip) over loopback:")
    print(f"  racf-vm (stream+gunzip+sha256+fsync): {ours:6.2f} s  {mib / ours:7.1f} MiB/s")
    print(f"  curl | gzip -d | tee | sha256sum:     {shell:6.2f} s  {mib / shell:7.1f} MiB/s")
    print(f"  ratio racf-vm/shell throughput: {shell / ours:.2f} (goal >= 1.0)")


def _refresh() -> None:
    os.makedirs(TRUSTED_AREA, 0o755, exist_ok=True)
    area = tempfile.mkdtemp(dir=TRUSTED_AREA)
    try:
        src, web, cache = (os.path.join(area, d) for d in ("src", "web", "cache"))
        os.mkdir(src)
        os.mkdir(web)
        for i in range(100):
            with open(os.path.join(src, f"img{i:03d}.raw"), "wb") as f:
                f.write(os.urandom(4096) + bytes(60000))
        publish(src, web)
        cfg = ImagesConfig(cache_dir=cache)
        with ImageServer(web) as srv:
            sync(cfg, source_url=srv.url)
            srv.clear()
            t0 = time.monotonic()
            report = sync(cfg, source_url=srv.url)
            took = time.monotonic() - t0
            requests = sum(srv.counts.values())
        print(f"refresh an up-to-date cache of 100 images: {took * 1000:.1f} ms, "
              f"{requests} HTTP request(s) ({'304' if report.list_not_modified else '200'}), "
              f"{report.unchanged} unchanged (goal: 1 request, < 300 ms)")
    finally:
        shutil.rmtree(area)


def main() -> None:
    work = tempfile.mkdtemp(prefix="racf-vm-bench-", dir="/var/tmp")
    try:
        _throughput(work)
    finally:
        shutil.rmtree(work)
    _refresh()


if __name__ == "__main__":
    main()
