"""racf_vm.images.syncplan: local state + remote list -> actions (pure)."""

from racf_vm.images.checksums import RemoteImage
from racf_vm.images.syncplan import LocalImage, SyncPlan, plan_sync

A, B = "a" * 64, "b" * 64


def remote(**names):
    return {n: RemoteImage(n, n + ".gz", "gzip", sha) for n, sha in names.items()}


def verified(sha):
    return LocalImage(present=True, verified_sha256=sha, managed=True)


def test_empty_everything():
    assert plan_sync({}, {}) == SyncPlan()
    assert not SyncPlan().needs_work


def test_up_to_date_cache_has_nothing_to_do():
    plan = plan_sync(remote(x=A, y=B), {"x": verified(A), "y": verified(B)})
    assert plan == SyncPlan(keep=("x", "y"))
    assert not plan.needs_work


def test_missing_and_changed_are_fetched():
    plan = plan_sync(remote(x=A, y=B), {"y": verified(A)})
    assert plan.fetch == ("x", "y")


def test_present_but_unverified_is_hashed_first():
    local = {"x": LocalImage(present=True, verified_sha256=None, managed=False),
             "y": LocalImage(present=True, verified_sha256=None, managed=True)}
    assert plan_sync(remote(x=A, y=B), local).verify == ("x", "y")


def test_withdrawn_managed_images_are_removed_foreign_files_kept():
    local = {"old": verified(A),
             "admins-own": LocalImage(present=True, verified_sha256=None, managed=False),
             "changed-then-withdrawn": LocalImage(present=True, verified_sha256=None, managed=True)}
    plan = plan_sync({}, local)
    assert plan.remove == ("changed-then-withdrawn", "old")
    assert "admins-own" not in plan.remove + plan.keep + plan.forget


def test_index_entries_without_a_file_are_forgotten():
    plan = plan_sync({}, {"gone": LocalImage(present=False, verified_sha256=None, managed=True)})
    assert plan == SyncPlan(forget=("gone",))
    # ...but refetched if the server still lists it
    plan = plan_sync(remote(gone=A), {"gone": LocalImage(False, None, True)})
    assert plan == SyncPlan(fetch=("gone",))


def test_every_name_gets_exactly_one_action():
    local = {"k": verified(A), "c": verified(B), "u": LocalImage(True, None, False),
             "w": verified(A), "f": LocalImage(False, None, True)}
    plan = plan_sync(remote(k=A, c=A, u=A, n=B), local)
    buckets = plan.fetch + plan.verify + plan.remove + plan.forget + plan.keep
    assert sorted(buckets) == sorted(set(buckets)) == ["c", "f", "k", "n", "u", "w"]
