"""Image lifecycle against a real HTTP server (issue 14): signed checksum lists, catalog
entries that follow the server, updates at job start, expiry, key rotation.

The job start is driven through the function racf_vm.job.run calls
(racf_vm.images.jobimage.hold_for_job); whole-cache runs through racf_vm.images.sync.
"""

import dataclasses
import hashlib
import os
import shutil
import tempfile
import time

import pytest

from racf_vm.config import Config, ImagesConfig
from racf_vm.core.errors import ConfigError, TemporaryError
from racf_vm.images import index, jobimage, remotelist, signedlist, signkeys, versions
from racf_vm.images.catalog import BootSpec, ContextSpec, ImageEntry
from racf_vm.images.publish import publish
from racf_vm.images.signedlist import BadSignatureError
from racf_vm.images.sync import sync
from tests.support import prereq
from tests.support.imageserver import ImageServer

pytestmark = pytest.mark.root

AREA = "/var/lib/racf-vm-test-images"  # root-owned, outside /tmp: the cache must be trusted


@pytest.fixture
def site():
    if os.geteuid() != 0:
        pytest.skip("needs root (trusted cache directory)")
    prereq.require_module("cryptography", "python3-cryptography")
    os.makedirs(AREA, 0o755, exist_ok=True)
    root = tempfile.mkdtemp(dir=AREA, prefix="lifecycle-")
    os.chmod(root, 0o755)
    src, web, keys = (os.path.join(root, d) for d in ("src", "web", "keys"))
    for d in (src, web):
        os.mkdir(d, 0o755)
    os.mkdir(keys, 0o700)
    old = signkeys.generate_keypair(os.path.join(keys, "old"), "old key")
    new = signkeys.generate_keypair(os.path.join(keys, "new"), "new key")
    with ImageServer(web) as srv:
        yield dataclasses.make_dataclass("Site", ["root", "src", "web", "cache", "server", "keys"])(
            root, src, web, os.path.join(root, "cache"), srv,
            {"old": (old, signkeys.load_private_key(os.path.join(keys, "old"))),
             "new": (new, signkeys.load_private_key(os.path.join(keys, "new")))})
    shutil.rmtree(root)


def _config(site, *trusted, **kw) -> Config:
    images = dict(source_url=site.server.url, cache_dir=site.cache, http_timeout=2.0, retries=1,
                  retry_delay=0.01, lock_timeout=30.0,
                  trusted_keys=tuple(site.keys[k][0].line for k in trusted))
    images.update(kw)
    return Config(images=ImagesConfig(**images))


def _make(site, name, seed=b"", size=200_000) -> str:
    data = (hashlib.sha256(name.encode() + seed).digest() * (size // 32 + 1))[:size]
    with open(os.path.join(site.src, name), "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def _publish(site, *keys):
    return publish(site.src, site.web, signers=[site.keys[k][1] for k in keys])


def _entry(site, name, sha="") -> ImageEntry:
    """A catalog entry for ``name`` in the cache: pinned to ``sha``, or following the server."""
    return ImageEntry(name=name.split(".")[0], trust="trusted", path=os.path.join(site.cache, name),
                      format="raw", sha256=sha, follow=not sha, boot=BootSpec("bootloader"),
                      context=ContextSpec("/dev/sda"))


def _content(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _cache_state(site) -> dict:
    """Every file under the cache with its content hash (what 'nothing is used' compares)."""
    out = {}
    for dirpath, _, files in os.walk(site.cache):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, site.cache)] = _content(p)
    return out


def test_a_tampered_list_or_signature_is_refused_and_nothing_is_used(site, caplog):
    a1 = _make(site, "a.raw")
    _make(site, "b.raw")
    _publish(site, "old")
    cfg = _config(site, "old")
    sync(cfg.images)
    before = _cache_state(site)
    listing = os.path.join(site.web, "SHA256SUMS")
    good = open(listing, "rb").read()
    # the attacker's image, compressed as a publisher would, served under the real name
    evil_web = os.path.join(site.root, "evil-web")
    os.mkdir(evil_web, 0o755)
    _make(site, "a.raw", seed=b"evil")
    publish(site.src, evil_web)
    evil_line = [line for line in open(os.path.join(evil_web, "SHA256SUMS"), "rb").read().splitlines()
                 if line.endswith(b"a.raw.gz")][0]
    shutil.copy(os.path.join(evil_web, "a.raw.gz"), os.path.join(site.web, "a.raw.gz"))
    head, _, body = good.partition(b"\n\n")
    tampered = b"".join(evil_line + b"\n" for line in body.splitlines() if line.endswith(b"a.raw.gz"))
    sig_line = [line for line in head.splitlines() if line.startswith(b"signature ")][0]
    flipped = sig_line[:-5] + (b"A" if sig_line[-5:-4] != b"A" else b"B") + sig_line[-4:]
    cases = {
        # one line changed (the attacker's image) and one dropped (a withdrawal)
        "list": head + b"\n\n" + tampered,
        # the list as published, one character of its signature changed
        "signature": good.replace(sig_line, flipped),
        # the serial raised, so that it would pass as newer
        "serial": good.replace(b"serial ", b"serial 9", 1),
    }
    for what, data in cases.items():
        with open(listing, "wb") as f:
            f.write(data)
        site.server.clear()
        caplog.clear()
        with pytest.raises(BadSignatureError, match="nothing in it is used") as e:
            sync(cfg.images)
        assert e.value.exit_status == 75, what
        assert "REFUSED checksum list" in caplog.text, what
        with pytest.raises(BadSignatureError):  # a job start: the same refusal, exit 75
            with jobimage.hold_for_job(_entry(site, "a.raw"), cfg):
                pytest.fail("a job ran on a refused list")
        assert site.server.counts["a.raw.gz"] == 0, what  # nothing fetched
        assert _cache_state(site) == before, what  # nothing removed, replaced or stored
    # the real list again: a job gets the real image
    with open(listing, "wb") as f:
        f.write(good)
    shutil.rmtree(evil_web)
    _make(site, "a.raw")
    _publish(site, "old")
    with jobimage.hold_for_job(_entry(site, "a.raw"), cfg) as held:
        assert held.entry.sha256 == a1 == _content(held.entry.path)


def test_unsigned_foreign_and_rolled_back_lists_are_refused(site):
    _make(site, "a.raw")
    cfg = _config(site, "old")
    publish(site.src, site.web)  # unsigned
    with pytest.raises(BadSignatureError, match="not signed"):
        sync(cfg.images)
    _publish(site, "new")  # signed, but by a key this node does not trust
    with pytest.raises(BadSignatureError, match="signed by no key this node trusts"):
        sync(cfg.images)
    _publish(site, "old")
    older = open(os.path.join(site.web, "SHA256SUMS"), "rb").read()
    _make(site, "a.raw", seed=b"v2")
    _publish(site, "old")
    sync(cfg.images)  # the newer list
    with open(os.path.join(site.web, "SHA256SUMS"), "wb") as f:
        f.write(older)  # an older list, validly signed: replayed
    with pytest.raises(BadSignatureError, match="rollback"):
        sync(cfg.images)
    with pytest.raises(ConfigError, match="trusted_keys"):  # follow needs signed lists
        jobimage.resolve(_entry(site, "a.raw"), _config(site))
    outside = dataclasses.replace(_entry(site, "a.raw"), path="/srv/images/a.raw")
    with pytest.raises(ConfigError, match="in the image cache"):
        jobimage.resolve(outside, cfg)


def test_a_publish_reaches_a_node_at_its_next_job_start(site):
    v1 = _make(site, "a.raw")
    _publish(site, "old")
    cfg = _config(site, "old")
    follow = _entry(site, "a.raw")
    with jobimage.hold_for_job(follow, cfg) as first:  # a long job on version 1
        assert first.entry.sha256 == v1 and first.entry.follow
        assert first.entry.path == versions.version_path(site.cache, "a.raw", v1)
        v2 = _make(site, "a.raw", seed=b"v2")
        _publish(site, "old")  # the publisher republishes; nobody touches the node
        site.server.clear()
        with jobimage.hold_for_job(follow, cfg) as second:  # the next job start
            assert second.entry.sha256 == v2
            assert _content(second.entry.path) == v2
            assert dict(site.server.counts) == {"SHA256SUMS": 1, "a.raw.gz": 1}
            # the first job still has its own file, unchanged, by name and by fd
            assert _content(first.entry.path) == v1
            assert os.fstat(first.fd).st_ino == os.stat(first.entry.path).st_ino
            assert os.fstat(second.fd).st_ino == os.stat(os.path.join(site.cache, "a.raw")).st_ino
        pinned_v1 = _entry(site, "a.raw", v1)  # a pinned entry of the old version: refused
        with pytest.raises(TemporaryError, match="catalog expects " + v1):
            jobimage.resolve(pinned_v1, cfg)
    v3 = _make(site, "a.raw", seed=b"v3")
    _publish(site, "old")
    with jobimage.hold_for_job(follow, cfg) as third:  # no job holds v1 now: it goes
        assert third.entry.sha256 == v3
        assert sorted(versions.existing(site.cache, "a.raw")) == [v3]


def test_an_unchanged_list_costs_one_conditional_request_per_job(site):
    sha = _make(site, "a.raw")
    _publish(site, "old")
    cfg = _config(site, "old")
    jobimage.resolve(_entry(site, "a.raw"), cfg)
    for _ in range(3):
        site.server.clear()
        got = jobimage.resolve(_entry(site, "a.raw"), cfg)
        assert got.sha256 == sha
        assert dict(site.server.counts) == {"SHA256SUMS": 1}
        assert site.server.count_304 == 1 and site.server.conditional == ["SHA256SUMS"]
    site.server.clear()
    jobimage.resolve(_entry(site, "a.raw", sha), cfg)  # pinned and verified: no request at all
    assert not site.server.counts


def test_expiry_only_when_the_verified_list_drops_an_image_and_never_while_held(site):
    a = _make(site, "a.raw")
    b = _make(site, "b.raw")
    _publish(site, "old")
    cfg = _config(site, "old")
    sync(cfg.images)
    with jobimage.hold_for_job(_entry(site, "b.raw"), cfg) as job_b:
        os.unlink(os.path.join(site.src, "b.raw"))
        _publish(site, "old")
        with jobimage.hold_for_job(_entry(site, "a.raw"), cfg):  # a job start sees the change
            pass
        assert os.path.exists(os.path.join(site.cache, "b.raw"))  # held: kept
        assert _content(job_b.entry.path) == b
        report = sync(cfg.images)
        assert report.busy == ["b.raw"] and report.removed == []
    site.server.clear()
    with jobimage.hold_for_job(_entry(site, "a.raw"), cfg):  # 304: no expiry work at all
        assert os.path.exists(os.path.join(site.cache, "b.raw"))
    report = sync(cfg.images)  # free now: removed, with its version link
    assert report.removed == ["b.raw"]
    assert not os.path.exists(os.path.join(site.cache, "b.raw"))
    assert versions.existing(site.cache, "b.raw") == {}
    assert index.verified_sha(site.cache, "a.raw") == a
    with pytest.raises(TemporaryError, match="not on the image server"):
        jobimage.resolve(_entry(site, "b.raw"), cfg)


def test_expiry_at_job_start_when_the_list_changed(site):
    _make(site, "a.raw")
    _make(site, "b.raw")
    _publish(site, "old")
    cfg = _config(site, "old")
    sync(cfg.images)
    os.unlink(os.path.join(site.src, "b.raw"))
    _publish(site, "old")
    with jobimage.hold_for_job(_entry(site, "a.raw"), cfg):
        assert not os.path.exists(os.path.join(site.cache, "b.raw"))
        assert versions.existing(site.cache, "b.raw") == {}


def test_key_rotation_two_keys_accepted_during_the_change(site):
    sha1 = _make(site, "a.raw")
    follow = _entry(site, "a.raw")
    _publish(site, "old")
    # step 1: every node trusts both keys; lists signed by the old key still pass
    both = _config(site, "old", "new")
    assert jobimage.resolve(follow, both).sha256 == sha1
    # step 2: the publisher signs with both keys, then with the new one only
    sha2 = _make(site, "a.raw", seed=b"2")
    _publish(site, "old", "new")
    assert jobimage.resolve(follow, both).sha256 == sha2
    assert jobimage.resolve(follow, _config(site, "old")).sha256 == sha2  # a node not yet changed
    sha3 = _make(site, "a.raw", seed=b"3")
    _publish(site, "new")
    assert jobimage.resolve(follow, both).sha256 == sha3
    with pytest.raises(BadSignatureError, match="no key this node trusts"):
        jobimage.resolve(follow, _config(site, "old"))  # a node left behind: refuses, runs nothing
    # step 3: nodes drop the old key; lists signed by it alone are refused from now on
    new_only = _config(site, "new")
    assert jobimage.resolve(follow, new_only).sha256 == sha3
    _make(site, "a.raw", seed=b"4")
    _publish(site, "old")  # a stolen old key
    with pytest.raises(BadSignatureError, match="no key this node trusts"):
        jobimage.resolve(follow, new_only)
    assert index.verified_sha(site.cache, "a.raw") == sha3


def test_the_stored_list_is_verified_again_when_it_is_read(site):
    sha = _make(site, "a.raw")
    _publish(site, "old")
    old_cfg = _config(site, "old")
    jobimage.resolve(_entry(site, "a.raw"), old_cfg)
    url = site.server.url + "SHA256SUMS"
    assert remotelist.load_offline(site.cache, url, remotelist.ListPolicy.of(old_cfg.images))
    new_only = remotelist.ListPolicy.of(_config(site, "new").images)
    assert remotelist.load_offline(site.cache, url, new_only) is None  # the key was dropped
    # the server is down: a follow entry runs the version of the last list it verified
    site.server.fault("SHA256SUMS", "500")
    assert jobimage.resolve(_entry(site, "a.raw"), old_cfg).sha256 == sha
    with pytest.raises(TemporaryError, match="server answered 500"):
        jobimage.resolve(_entry(site, "a.raw"), _config(site, "new"))


def test_a_list_older_than_max_list_age_is_refused(site):
    _make(site, "a.raw")
    _publish(site, "old")
    path = os.path.join(site.web, "SHA256SUMS")
    body = signedlist.split(open(path, "rb").read(), path).body
    ten_days_ago = time.time_ns() - 10 * 86400 * 10**9
    with open(path, "wb") as f:  # validly signed, but long ago (a server frozen on it)
        f.write(signedlist.sign(body, "SHA256SUMS", ten_days_ago, [site.keys["old"][1]]))
    with pytest.raises(BadSignatureError, match="max_list_age"):
        jobimage.resolve(_entry(site, "a.raw"), _config(site, "old", max_list_age=86400))
    assert jobimage.resolve(_entry(site, "a.raw"), _config(site, "old")).sha256  # no limit set


def test_a_job_with_an_older_list_never_puts_back_an_older_version(site, monkeypatch):
    _make(site, "a.raw")
    _make(site, "b.raw")
    _publish(site, "old")
    cfg = _config(site, "old")
    url = site.server.url + "SHA256SUMS"
    policy = remotelist.ListPolicy.of(cfg.images)
    jobimage.resolve(_entry(site, "a.raw"), cfg)
    _make(site, "a.raw", seed=b"2")
    _publish(site, "old")
    jobimage.resolve(_entry(site, "b.raw"), cfg)  # another job start stores the list of v2
    slow_view = remotelist.load_offline(site.cache, url, policy)
    v3 = _make(site, "a.raw", seed=b"3")
    _publish(site, "old")
    jobimage.resolve(_entry(site, "b.raw"), cfg)  # and then the list of v3
    # a job that checked the list before v3 was published now fetches its image
    monkeypatch.setattr(remotelist, "refresh", lambda *a, **kw: slow_view)
    got = jobimage.resolve(_entry(site, "a.raw"), cfg)
    assert got.sha256 == v3 and index.verified_sha(site.cache, "a.raw") == v3
