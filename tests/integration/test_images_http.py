"""Image distribution against a real HTTP server, with faults injected.

After every case: nothing partial or unverified is visible in the cache (each image file
there is recorded in the verified index with its true sha256) and no temporary file is
left behind.
"""

import hashlib
import logging
import multiprocessing
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from racf_vm.images.catalog import BootSpec, ContextSpec, ImageEntry
from racf_vm.config import Config, ImagesConfig
from racf_vm.core.errors import TemporaryError
from racf_vm.images.locks import hold_image
from racf_vm.images.publish import publish
from racf_vm.images.sync import ensure_image, sync
from racf_vm.images import index
from racf_vm.images.fetch import ChecksumMismatchError
from racf_vm.images.sync import SyncError
from tests.support.imageserver import ImageServer

pytestmark = pytest.mark.root

AREA = "/var/lib/racf-vm-test-images"  # root-owned, outside /tmp: the cache must be trusted


@pytest.fixture
def area():
    if os.geteuid() != 0:
        pytest.skip("needs root (trusted cache directory, tmpfs)")
    os.makedirs(AREA, 0o755, exist_ok=True)
    root = tempfile.mkdtemp(dir=AREA)
    os.chmod(root, 0o755)
    src, web = os.path.join(root, "src"), os.path.join(root, "web")
    os.mkdir(src)
    os.mkdir(web)
    yield root, src, web, os.path.join(root, "cache")
    shutil.rmtree(root)


@pytest.fixture
def server(area):
    with ImageServer(area[2]) as srv:
        yield srv


def _cfg(**kw) -> ImagesConfig:
    base = dict(http_timeout=0.5, retries=2, retry_delay=0.01, lock_timeout=30.0)
    base.update(kw)
    return ImagesConfig(**base)


def _make(src, name, size=300_000, seed=b"") -> str:
    data = (hashlib.sha256(name.encode() + seed).digest() * (size // 32 + 1))[:size]
    data = data[: size // 2] + b"\0" * (size - size // 2)
    with open(os.path.join(src, name), "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def assert_clean(cache):
    """No temp file; every image visible is verified and has the content it claims."""
    if not os.path.isdir(cache):
        return
    names = os.listdir(cache)
    assert not [n for n in names if n.startswith(".tmp-")], names
    idx = index.load(cache)
    for name in names:
        if name.startswith("."):
            continue
        path = os.path.join(cache, name)
        with open(path, "rb") as f:
            real = hashlib.sha256(f.read()).hexdigest()
        assert index.verified_sha(cache, name, idx) == real, f"{name} visible but not verified"
        assert os.stat(path).st_mode & 0o777 == 0o644


def _entry(cache, name, sha) -> ImageEntry:
    return ImageEntry(name=name.split(".")[0], trust="trusted", path=os.path.join(cache, name),
                      format="raw", sha256=sha, boot=BootSpec("bootloader"),
                      context=ContextSpec("/dev/sda"))


def test_sync_then_up_to_date_refresh_is_one_conditional_request(area, server):
    _, src, web, cache = area
    shas = {n: _make(src, n) for n in ("a.raw", "b.qcow2")}
    publish(src, web)
    report = sync(_cfg(), source_url=server.url, cache_dir=cache)
    assert sorted(report.fetched) == ["a.raw", "b.qcow2"]
    for n, sha in shas.items():
        assert hashlib.sha256(open(os.path.join(cache, n), "rb").read()).hexdigest() == sha
    server.clear()
    report = sync(_cfg(), source_url=server.url, cache_dir=cache)
    assert report.list_not_modified and report.unchanged == 2 and report.requests == 1
    assert dict(server.counts) == {"SHA256SUMS": 1} and server.conditional == ["SHA256SUMS"]
    assert server.count_304 == 1
    assert_clean(cache)


def test_changed_image_is_refetched_without_rehashing_the_rest(area, server):
    _, src, web, cache = area
    _make(src, "a.raw")
    _make(src, "b.raw")
    publish(src, web)
    sync(_cfg(), source_url=server.url, cache_dir=cache)
    new = _make(src, "b.raw", seed=b"v2")
    publish(src, web)
    server.clear()
    report = sync(_cfg(), source_url=server.url, cache_dir=cache)
    assert report.fetched == ["b.raw"] and report.unchanged == 1
    assert index.verified_sha(cache, "b.raw") == new
    assert_clean(cache)


def test_500_is_retried_then_fails_clearly(area, server, caplog):
    _, src, web, cache = area
    _make(src, "a.raw")
    publish(src, web)
    server.fault("a.raw.gz", "500", times=2)
    assert sync(_cfg(), source_url=server.url, cache_dir=cache).fetched == ["a.raw"]
    assert server.counts["a.raw.gz"] == 3
    shutil.rmtree(cache)
    server.fault("a.raw.gz", "500")
    with pytest.raises(SyncError, match="1 image.*a.raw"):
        sync(_cfg(), source_url=server.url, cache_dir=cache)
    assert "server answered 500" in caplog.text and "gave up after 3 attempts" in caplog.text
    assert not os.path.exists(os.path.join(cache, "a.raw"))
    assert_clean(cache)


def test_list_500_fails(area, server):
    _, src, web, cache = area
    publish(src, web)
    server.fault("SHA256SUMS", "500")
    with pytest.raises(TemporaryError, match="SHA256SUMS: server answered 500"):
        sync(_cfg(retries=0), source_url=server.url, cache_dir=cache)


def test_truncated_body(area, server, caplog):
    _, src, web, cache = area
    _make(src, "a.raw", size=2_000_000)
    publish(src, web)
    size = os.path.getsize(os.path.join(web, "a.raw.gz"))
    server.fault("a.raw.gz", "truncate", keep=size // 2)
    with pytest.raises(SyncError):
        sync(_cfg(), source_url=server.url, cache_dir=cache)
    assert "connection closed early" in caplog.text or "ends early" in caplog.text
    assert not os.path.exists(os.path.join(cache, "a.raw"))
    assert_clean(cache)
    server.fault("a.raw.gz", "truncate", keep=size // 2, times=1)  # transient: retried
    assert sync(_cfg(), source_url=server.url, cache_dir=cache).fetched == ["a.raw"]
    assert_clean(cache)


def test_stalled_connection_times_out(area, server, caplog):
    _, src, web, cache = area
    _make(src, "a.raw", size=2_000_000)
    publish(src, web)
    server.fault("a.raw.gz", "stall", keep=1000, seconds=5)
    start = time.monotonic()
    with pytest.raises(SyncError):
        sync(_cfg(retries=1), source_url=server.url, cache_dir=cache)
    assert time.monotonic() - start < 3
    assert "timed out" in caplog.text
    assert_clean(cache)


def test_wrong_checksum_is_critical_and_discarded(area, server, caplog):
    _, src, web, cache = area
    _make(src, "a.raw")
    publish(src, web)
    lst = os.path.join(web, "SHA256SUMS")
    text = open(lst).read()
    wrong = "f" * 64 + text[64:]
    open(lst, "w").write(wrong)
    with pytest.raises(SyncError):
        sync(_cfg(), source_url=server.url, cache_dir=cache)
    crit = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(crit) == 1 and "BAD checksum for image a.raw" in crit[0].getMessage()
    assert server.counts["a.raw.gz"] == 1  # not retried
    assert not os.path.exists(os.path.join(cache, "a.raw"))
    assert_clean(cache)
    # The job path: exit 75 so the job runs elsewhere.
    cfg = Config(images=_cfg(source_url=server.url, cache_dir=cache))
    with pytest.raises(ChecksumMismatchError) as e:
        ensure_image(_entry(cache, "a.raw", "f" * 64), cfg)
    assert e.value.exit_status == 75 and "discarded" in str(e.value)
    assert_clean(cache)


def test_corrupt_compressed_data(area, server, caplog):
    _, src, web, cache = area
    _make(src, "a.raw", size=2_000_000)
    publish(src, web, codec="zstd")
    server.fault("a.raw.zst", "corrupt")
    with pytest.raises(SyncError):
        sync(_cfg(), source_url=server.url, cache_dir=cache)
    assert "corrupt zstd data" in caplog.text or "BAD checksum" in caplog.text
    assert not os.path.exists(os.path.join(cache, "a.raw"))
    assert_clean(cache)


def test_withdrawn_image_removed_unless_a_job_holds_it(area, server):
    _, src, web, cache = area
    _make(src, "a.raw")
    _make(src, "b.raw")
    publish(src, web)
    sync(_cfg(), source_url=server.url, cache_dir=cache)
    open(os.path.join(cache, "admins-own.raw"), "wb").close()  # not ours: never removed
    os.unlink(os.path.join(src, "a.raw"))
    publish(src, web)
    with hold_image(os.path.join(cache, "a.raw")) as fd:
        assert fd >= 0
        report = sync(_cfg(), source_url=server.url, cache_dir=cache)
        assert report.busy == ["a.raw"] and report.removed == []
        assert os.path.exists(os.path.join(cache, "a.raw"))
    report = sync(_cfg(), source_url=server.url, cache_dir=cache)
    assert report.removed == ["a.raw"]
    assert sorted(n for n in os.listdir(cache) if not n.startswith(".")) == ["admins-own.raw", "b.raw"]
    assert sorted(os.listdir(os.path.join(cache, ".locks"))) == ["b.raw"]
    with pytest.raises(TemporaryError, match="not on this node"):
        with hold_image(os.path.join(cache, "a.raw")):
            pass
    os.unlink(os.path.join(cache, "admins-own.raw"))
    assert_clean(cache)


def test_full_disk(area, server, caplog):
    _, src, web, _ = area
    _make(src, "big.raw", size=8_000_000)
    publish(src, web)
    cache = os.path.join(area[0], "small")
    os.mkdir(cache, 0o755)
    subprocess.run(["/usr/bin/mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", cache],
                   check=True)
    try:
        with pytest.raises(SyncError):
            sync(_cfg(), source_url=server.url, cache_dir=cache)
        assert "no space left on the device holding" in caplog.text
        assert server.counts["big.raw.gz"] == 1  # a full disk is not retried
        assert not os.path.exists(os.path.join(cache, "big.raw"))
        assert_clean(cache)
    finally:
        subprocess.run(["/usr/bin/umount", cache], check=True)


def test_ensure_image(area, server):
    _, src, web, cache = area
    sha = _make(src, "a.raw")
    publish(src, web)
    entry = _entry(cache, "a.raw", sha)
    ensure_image(entry, Config(images=_cfg(cache_dir=cache)))  # no source: no-op
    assert not os.path.exists(cache) and not server.counts
    cfg = Config(images=_cfg(source_url=server.url, cache_dir=cache))
    outside = _entry("/var/lib/elsewhere", "a.raw", sha)
    ensure_image(outside, cfg)
    assert not server.counts
    ensure_image(entry, cfg)
    assert index.verified_sha(cache, "a.raw") == sha
    server.clear()
    ensure_image(entry, cfg)  # verified: no network at all
    assert not server.counts
    with pytest.raises(TemporaryError, match="catalog expects " + "e" * 64):
        ensure_image(_entry(cache, "a.raw", "e" * 64), cfg)
    with pytest.raises(TemporaryError, match="not on the image server"):
        ensure_image(_entry(cache, "zz.raw", sha), cfg)
    assert_clean(cache)


def test_leftover_temp_of_a_killed_download_is_removed(area, server):
    _, src, web, cache = area
    _make(src, "a.raw")
    publish(src, web)
    os.mkdir(cache, 0o755)
    stale = os.path.join(cache, ".tmp-a.raw-0123456789ab")
    open(stale, "wb").write(b"half")
    sync(_cfg(), source_url=server.url, cache_dir=cache)
    assert not os.path.exists(stale)
    assert_clean(cache)


def _worker(entry, cfg, results):
    try:
        ensure_image(entry, cfg)
        results.put("ok")
    except Exception as exc:  # reported to the parent
        results.put(repr(exc))


def test_eight_processes_one_download(area, server):
    _, src, web, cache = area
    sha = _make(src, "a.raw", size=2_000_000)
    publish(src, web)
    server.fault("a.raw.gz", "slow", seconds=1.0)
    cfg = Config(images=_cfg(source_url=server.url, cache_dir=cache, http_timeout=5))
    entry = _entry(cache, "a.raw", sha)
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(entry, cfg, results)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [results.get(timeout=5) for _ in procs] == ["ok"] * 8
    assert server.counts["a.raw.gz"] == 1
    assert index.verified_sha(cache, "a.raw") == sha
    assert_clean(cache)
