"""Image distribution bench (``make bench``): run as ``python -m tests.bench_images``
(``--only job-check`` for the third part alone).

1. Fetch + decompress + verify throughput for a 1 GiB compressible image served over
   loopback, beside ``curl | gzip -d | tee FILE | sha256sum``.
2. Time and HTTP requests to refresh an up-to-date cache of 100 images.
3. The per-job check of an image that follows the server (issue 14) when nothing changed:
   one conditional request for the signed list (304), the stored list verified again,
   the cached version found; goal: 1 request and under 20 ms.
Only 127.0.0.1 is used. Needs root (the cache must be a trusted directory).
"""

import hashlib
import os
import shutil
import statistics
import subprocess
import sys
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


_COLD = """
import sys, time
t0 = time.perf_counter()
from racf_vm.images import jobimage
from racf_vm.images.catalog import BootSpec, ContextSpec, ImageEntry
from racf_vm.config import Config, ImagesConfig
cfg = Config(images=ImagesConfig(source_url=sys.argv[1], cache_dir=sys.argv[2],
                                 trusted_keys=(sys.argv[3],)))
entry = ImageEntry(name="img", trust="trusted", path=sys.argv[2] + "/img.raw", format="raw",
                   sha256="", follow=True, boot=BootSpec("bootloader"), context=ContextSpec("/dev/sda"))
t1 = time.perf_counter()
jobimage.resolve(entry, cfg)
t2 = time.perf_counter()
print(f"{(t1 - t0) * 1000:.1f} {(t2 - t1) * 1000:.1f}")
"""


def _job_check() -> None:
    from racf_vm.config import Config
    from racf_vm.images import jobimage, signkeys
    from racf_vm.images.catalog import BootSpec, ContextSpec, ImageEntry

    os.makedirs(TRUSTED_AREA, 0o755, exist_ok=True)
    area = tempfile.mkdtemp(dir=TRUSTED_AREA)
    try:
        src, web, cache, keys = (os.path.join(area, d) for d in ("src", "web", "cache", "keys"))
        for d in (src, web, keys):
            os.mkdir(d, 0o700 if d == keys else 0o755)
        os.chmod(area, 0o755)
        with open(os.path.join(src, "img.raw"), "wb") as f:
            f.write(os.urandom(4096) + bytes(1 << 20))
        for i in range(99):  # a list of 100 images, as a site might have
            with open(os.path.join(src, f"other{i:02d}.raw"), "wb") as f:
                f.write(os.urandom(512))
        public = signkeys.generate_keypair(os.path.join(keys, "k"), "bench")
        publish(src, web, signers=[signkeys.load_private_key(os.path.join(keys, "k"))])
        cfg = Config(images=ImagesConfig(cache_dir=cache, trusted_keys=(public.line,)))
        entry = ImageEntry(name="img", trust="trusted", path=os.path.join(cache, "img.raw"),
                           format="raw", sha256="", follow=True, boot=BootSpec("bootloader"),
                           context=ContextSpec("/dev/sda"))
        with ImageServer(web) as srv:
            import dataclasses

            cfg = dataclasses.replace(cfg, images=dataclasses.replace(cfg.images, source_url=srv.url))
            jobimage.resolve(entry, cfg)  # the first job fetches it
            times = []
            srv.clear()
            for _ in range(50):
                t0 = time.perf_counter()
                jobimage.resolve(entry, cfg)
                times.append((time.perf_counter() - t0) * 1000)
            per_check = sum(srv.counts.values()) / 50
            not_modified = srv.count_304 / 50
            cold = subprocess.run([sys.executable, "-c", _COLD, srv.url, cache, public.line],
                                  capture_output=True, text=True, check=True,
                                  cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            imports_ms, first_ms = cold.stdout.split()
        print(f"per-job check, image follows the server, nothing changed (signed list of 100 "
              f"images): median {statistics.median(times):.1f} ms, max {max(times):.1f} ms over 50; "
              f"{per_check:g} request(s) per check, {not_modified:.0%} answered 304 "
              f"(goal: 1 request, < 20 ms)")
        print(f"  first check in a fresh process: {first_ms} ms (imports before it: {imports_ms} ms)")
    finally:
        shutil.rmtree(area)


def main() -> None:
    if sys.argv[1:] == ["--only", "job-check"]:
        _job_check()
        return
    work = tempfile.mkdtemp(prefix="racf-vm-bench-", dir="/var/tmp")
    try:
        _throughput(work)
    finally:
        shutil.rmtree(work)
    _refresh()
    _job_check()


if __name__ == "__main__":
    main()
