"""Image distribution against a real HTTP server, with faults injected.

After every case: nothing partial or unverified is visible in the cache (each image file
there is recorded in the verified index with its true sha256) and no temporary file is
left behind.
"""

import dataclasses
import hashlib
import logging
import multiprocessing
import os
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

from racf_vm.config import Config, ImagesConfig
from racf_vm.core.errors import TemporaryError
from racf_vm.core.locking import LockTimeout
from racf_vm.images import index, jobimage, versions
from racf_vm.images.catalog import BootSpec, ContextSpec, ImageEntry
from racf_vm.images.codecs import CODECS
from racf_vm.images.fetch import ChecksumMismatchError
from racf_vm.images.jobimage import hold_for_job
from racf_vm.images.jobimage import resolve as ensure_image
from racf_vm.images.locks import hold_image, image_lock
from racf_vm.images.publish import publish
from racf_vm.images.stream import compressed_cap
from racf_vm.images.sync import SyncError, sync
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


def _make_random(src, name, size) -> str:
    """Incompressible: the compressed file is as large as the image."""
    data = os.urandom(size)
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
    with pytest.raises(TemporaryError, match="not on this node and no image server"):
        ensure_image(entry, Config(images=_cfg(cache_dir=cache)))  # no source, no file
    assert not server.counts
    cfg = Config(images=_cfg(source_url=server.url, cache_dir=cache))
    outside = _entry("/var/lib/elsewhere", "a.raw", sha)
    assert ensure_image(outside, cfg) == outside  # the admin's own file: used by its path
    assert not server.counts
    got = ensure_image(entry, cfg)
    assert got.path == versions.version_path(cache, "a.raw", sha) and got.sha256 == sha
    assert index.verified_sha(cache, "a.raw") == sha
    assert os.stat(got.path).st_ino == os.stat(os.path.join(cache, "a.raw")).st_ino
    server.clear()
    assert ensure_image(entry, cfg) == got  # verified: no network at all
    assert not server.counts
    with pytest.raises(TemporaryError, match="catalog expects " + "e" * 64):
        ensure_image(_entry(cache, "a.raw", "e" * 64), cfg)
    with pytest.raises(TemporaryError, match="not on the image server"):
        ensure_image(_entry(cache, "zz.raw", sha), cfg)
    # no server any more: the verified file keeps working, pinned
    assert ensure_image(entry, Config(images=_cfg(cache_dir=cache))) == got
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


# -- issue 11 item 15: bounds on image sync -------------------------------------------------

@pytest.mark.parametrize("codec", sorted(CODECS))
def test_decompression_bomb_stops_at_the_cap(area, server, caplog, codec):
    _, src, web, cache = area
    _make(src, "a.raw")
    publish(src, web, codec=codec)
    file = "a.raw" + CODECS[codec].suffix
    server.fault(file, "bomb", keep=256 << 20)  # a few hundred KiB that become 256 MiB
    cap = 4 << 20
    with pytest.raises(SyncError, match="a.raw"):
        sync(_cfg(max_image_bytes=cap), source_url=server.url, cache_dir=cache)
    assert (f"image a.raw from {server.url}{file} decompresses to more than its cap of "
            f"{cap} bytes: stopped there" in caplog.text)
    assert not [r for r in caplog.records if r.levelno == logging.CRITICAL]  # no hash of a whole bomb
    assert server.counts[file] == 1  # deterministic: not retried
    assert not os.path.exists(os.path.join(cache, "a.raw"))
    assert_clean(cache)


def test_endless_empty_members_stop_at_the_compressed_cap(area, server, caplog):
    _, src, web, cache = area
    _make(src, "a.raw")
    publish(src, web)
    server.fault("a.raw.gz", "empty-members", keep=8 << 20)  # 8 MiB of input, no output at all
    with pytest.raises(SyncError):
        sync(_cfg(max_image_bytes=1 << 20), source_url=server.url, cache_dir=cache)
    assert (f"sent more than {compressed_cap(1 << 20)} compressed bytes for an image capped at "
            "1048576 bytes: stopped there" in caplog.text)
    assert_clean(cache)


def test_catalog_size_bounds_tighter_than_max_image_bytes(area, server):
    _, src, web, cache = area
    sha = _make(src, "a.raw")
    publish(src, web)
    server.fault("a.raw.gz", "bomb", keep=64 << 20)
    cfg = Config(images=_cfg(source_url=server.url, cache_dir=cache))  # default cap: 64 GiB
    entry = dataclasses.replace(_entry(cache, "a.raw", sha), size=300_000)
    with pytest.raises(TemporaryError, match="decompresses to more than its cap of 300000 bytes") as e:
        ensure_image(entry, cfg)  # a job
    assert e.value.exit_status == 75
    with pytest.raises(SyncError):  # `racf-vm images sync` passes the catalog's sizes
        sync(cfg.images, sizes={sha: 300_000})
    assert_clean(cache)
    server.clear()
    ensure_image(entry, cfg)  # the exact size fits
    assert index.verified_sha(cache, "a.raw") == sha
    assert_clean(cache)


def test_trickling_server_is_cut_off_at_the_download_deadline(area, server, caplog):
    _, src, web, cache = area
    _make_random(src, "a.raw", 300_000)
    publish(src, web)
    # 4 KiB every 0.1 s: no read waits near the 0.5 s read timeout; the whole would take 7 s.
    server.fault("a.raw.gz", "trickle", keep=4096, seconds=0.1)
    start = time.monotonic()
    with pytest.raises(SyncError, match="a.raw"):
        sync(_cfg(download_timeout=1.5), source_url=server.url, cache_dir=cache)
    assert 1.4 < time.monotonic() - start < 3.0
    assert "a.raw.gz: not finished within 1.5s" in caplog.text and "cut off" in caplog.text
    assert server.counts["a.raw.gz"] == 1  # the deadline covers the retries too
    assert not os.path.exists(os.path.join(cache, "a.raw"))
    assert_clean(cache)
    server.clear()
    assert sync(_cfg(download_timeout=1.5), source_url=server.url, cache_dir=cache).fetched == ["a.raw"]
    assert_clean(cache)


def test_a_stuck_holder_frees_the_image_lock_at_its_own_deadline(area, server):
    _, src, web, cache = area
    sha = _make_random(src, "a.raw", 300_000)
    publish(src, web)
    # A job downloads the image under its lock: 4 KiB every 0.1 s (~7 s in all).
    server.fault("a.raw.gz", "trickle", keep=4096, seconds=0.1)
    cfg = Config(images=_cfg(source_url=server.url, cache_dir=cache, download_timeout=2.0))
    entry = _entry(cache, "a.raw", sha)
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    holder = ctx.Process(target=_worker, args=(entry, cfg, results))
    start = time.monotonic()
    holder.start()
    while not server.counts["a.raw.gz"]:  # it holds the lock now
        assert time.monotonic() - start < 5
        time.sleep(0.02)
    impatient = Config(images=_cfg(source_url=server.url, cache_dir=cache, lock_timeout=0.3))
    t0 = time.monotonic()
    with pytest.raises(LockTimeout, match="fetching image 'a.raw'"):
        ensure_image(entry, impatient)  # a waiting job gives up within its own bound
    assert time.monotonic() - t0 < 1.5
    holder.join(10)
    outcome = results.get(timeout=5)
    assert "not finished within 2s" in outcome, outcome
    assert time.monotonic() - start < 4  # the holder's deadline ended its hold
    server.clear()
    ensure_image(entry, impatient)  # the lock is free: no wait at all
    assert index.verified_sha(cache, "a.raw") == sha
    assert_clean(cache)


def test_a_changed_image_goes_in_while_a_job_runs_on_the_old_one(area, server):
    _, src, web, cache = area
    old = _make(src, "a.raw")
    publish(src, web)
    cfg = Config(images=_cfg(source_url=server.url, cache_dir=cache))
    with hold_for_job(_entry(cache, "a.raw", old), cfg) as held:
        new = _make(src, "a.raw", seed=b"v2")
        publish(src, web)
        server.clear()
        report = sync(_cfg(), source_url=server.url, cache_dir=cache)
        assert report.fetched == ["a.raw"] and report.busy == []
        assert index.verified_sha(cache, "a.raw") == new
        # the running job's file is untouched, under its own name
        assert held.entry.path == versions.version_path(cache, "a.raw", old)
        assert hashlib.sha256(open(held.entry.path, "rb").read()).hexdigest() == old
        assert os.fstat(held.fd).st_ino == os.stat(held.entry.path).st_ino
        assert sorted(versions.existing(cache, "a.raw")) == sorted([old, new])
        got = ensure_image(_entry(cache, "a.raw", new), cfg)  # a job of the new version
        assert got.path == versions.version_path(cache, "a.raw", new)
    sync(_cfg(), source_url=server.url, cache_dir=cache)  # nobody holds the old one: gone
    assert sorted(versions.existing(cache, "a.raw")) == [new]
    assert_clean(cache)


def test_a_job_that_starts_holding_during_the_download_keeps_its_image(area, server):
    _, src, web, cache = area
    old = _make(src, "a.raw", size=2_000_000)
    publish(src, web)
    sync(_cfg(), source_url=server.url, cache_dir=cache)
    new = _make(src, "a.raw", size=2_000_000, seed=b"v2")
    publish(src, web)
    server.clear()
    server.fault("a.raw.gz", "slow", seconds=1.0)
    held, done = threading.Event(), threading.Event()
    old_path = versions.version_path(cache, "a.raw", old)

    def job():
        while not server.counts["a.raw.gz"]:
            time.sleep(0.01)
        with hold_image(old_path):  # the old file, while the new one is on its way
            held.set()
            done.wait(10)

    t = threading.Thread(target=job)
    t.start()
    try:
        report = sync(_cfg(http_timeout=5), source_url=server.url, cache_dir=cache)
        assert held.is_set() and report.fetched == ["a.raw"]
        assert hashlib.sha256(open(old_path, "rb").read()).hexdigest() == old
        assert index.verified_sha(cache, "a.raw") == new
    finally:
        done.set()
        t.join()
    assert server.counts["a.raw.gz"] == 1
    assert_clean(cache)


def test_stale_temps_are_swept_for_every_image_but_a_live_download(area, server):
    _, src, web, cache = area
    _make(src, "a.raw")
    _make(src, "b.raw")
    publish(src, web)
    sync(_cfg(), source_url=server.url, cache_dir=cache)
    kept = os.path.join(cache, ".tmp-a.raw-0123456789ab")  # a.raw itself is up to date
    unlisted = os.path.join(cache, ".tmp-gone.raw-0123456789ab")  # no such image any more
    live = os.path.join(cache, ".tmp-b.raw-abcdefabcdef")  # its download holds b.raw's lock
    for leftover in (kept, unlisted, live):
        open(leftover, "wb").write(b"half")
    with image_lock(cache, "b.raw", 1.0):
        report = sync(_cfg(), source_url=server.url, cache_dir=cache)
        assert report.unchanged == 2
        assert not os.path.exists(kept) and not os.path.exists(unlisted)
        assert os.path.exists(live)
        assert sorted(os.listdir(os.path.join(cache, ".locks"))) == ["a.raw", "b.raw"]
    sync(_cfg(), source_url=server.url, cache_dir=cache)
    assert not os.path.exists(live)
    assert_clean(cache)


def test_a_job_holds_only_the_file_its_catalog_verified(area, server, monkeypatch):
    _, src, web, cache = area
    old = _make(src, "a.raw")
    publish(src, web)
    cfg = Config(images=_cfg(source_url=server.url, cache_dir=cache))
    with hold_for_job(_entry(cache, "a.raw", old), cfg) as held:  # fetched, verified, held
        assert os.fstat(held.fd).st_ino == os.stat(os.path.join(cache, "a.raw")).st_ino
    new = _make(src, "a.raw", seed=b"v2")
    publish(src, web)
    real = jobimage.resolve

    def then_a_sync(entry, config, **kw):
        resolved = real(entry, config, **kw)
        monkeypatch.setattr(jobimage, "resolve", real)
        sync(config.images)  # nobody holds the old version yet: replaced, its link pruned
        return resolved

    monkeypatch.setattr(jobimage, "resolve", then_a_sync)
    with pytest.raises(TemporaryError, match="catalog expects " + old) as e:
        with hold_for_job(_entry(cache, "a.raw", old), cfg):
            pytest.fail("the job would run a file its catalog does not name")
    assert e.value.exit_status == 75
    assert index.verified_sha(cache, "a.raw") == new
    assert_clean(cache)
