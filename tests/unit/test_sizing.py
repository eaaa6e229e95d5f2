"""racf_vm.vm.sizing: cgroup v1/v2 limits from crafted sysfs trees, and the VM size plan."""

import pytest

from racf_vm.config import SizingConfig
from racf_vm.core.errors import RefusedError
from racf_vm.vm.sizing import SlotLimits, VMSize, plan_vm_size, read_cgroup_limits

GIB = 1 << 30
MIB = 1 << 20
V1_UNLIMITED = "9223372036854771712"


def put(root, rel, name, value):
    d = root / rel if rel else root
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(f"{value}\n")


# --- cgroup v2 ----------------------------------------------------------------------------

SLICE = "system.slice/condor.service/htcondor/_var_lib_condor_execute_slot1_1@host.slice"
SCOPE = SLICE + "/_var_lib_condor_execute_slot1_1@host.scope"


def v2_tree(tmp_path):
    put(tmp_path, "system.slice", "memory.max", "max")
    put(tmp_path, "system.slice", "cpu.weight", "100")
    put(tmp_path, "system.slice/condor.service", "memory.max", "max")
    put(tmp_path, SLICE, "memory.max", 4 * GIB)
    put(tmp_path, SLICE, "cpu.weight", 300)
    put(tmp_path, SLICE, "cpu.max", "max 100000")
    put(tmp_path, SCOPE, "memory.max", "max")
    put(tmp_path, SCOPE, "cpu.weight", 100)
    return tmp_path


def test_v2_slot(tmp_path):
    v2_tree(tmp_path)
    limits = read_cgroup_limits(f"0::/{SCOPE}\n", str(tmp_path))
    assert limits == SlotLimits(memory_bytes=4 * GIB, cpus=3)


def test_v2_min_on_the_way_up(tmp_path):
    v2_tree(tmp_path)
    put(tmp_path, "system.slice", "memory.max", 2 * GIB)
    assert read_cgroup_limits(f"0::/{SCOPE}\n", str(tmp_path)).memory_bytes == 2 * GIB


def test_v2_quota(tmp_path):
    v2_tree(tmp_path)
    put(tmp_path, SLICE, "cpu.max", "150000 100000")
    assert read_cgroup_limits(f"0::/{SCOPE}\n", str(tmp_path)).cpus == 2


def test_v2_unlimited_and_default_weight(tmp_path):
    put(tmp_path, "user.slice/x.scope", "memory.max", "max")
    put(tmp_path, "user.slice/x.scope", "cpu.weight", "100")
    assert read_cgroup_limits("0::/user.slice/x.scope\n", str(tmp_path)) == SlotLimits(None, None)


def test_v2_root_cgroup(tmp_path):
    put(tmp_path, "", "cpu.weight", "500")  # ignored: root
    assert read_cgroup_limits("0::/\n", str(tmp_path)) == SlotLimits(None, None)


def test_v2_garbage_files(tmp_path):
    put(tmp_path, "a", "memory.max", "lots")
    put(tmp_path, "a", "cpu.weight", "x")
    put(tmp_path, "a", "cpu.max", "1 2 3")
    assert read_cgroup_limits("0::/a\n", str(tmp_path)) == SlotLimits(None, None)


def test_v2_rejects_dotdot(tmp_path):
    put(tmp_path, "", "memory.max", GIB)
    assert read_cgroup_limits("0::/../../etc\n", str(tmp_path)) == SlotLimits(None, None)


# --- cgroup v1 ----------------------------------------------------------------------------

V1_JOB = "htcondor/condor_var_lib_condor_execute_slot1_1@host"
V1_PROC = f"""12:pids:/{V1_JOB}
11:memory:/{V1_JOB}
4:cpu,cpuacct:/{V1_JOB}
1:name=systemd:/system.slice/condor.service
0::/system.slice/condor.service
"""


def v1_tree(tmp_path, shares=200):
    put(tmp_path, "memory", "memory.limit_in_bytes", V1_UNLIMITED)
    put(tmp_path, "memory/htcondor", "memory.limit_in_bytes", V1_UNLIMITED)
    put(tmp_path, f"memory/{V1_JOB}", "memory.limit_in_bytes", 2 * GIB)
    put(tmp_path, "cpu,cpuacct", "cpu.shares", 1024)
    put(tmp_path, f"cpu,cpuacct/{V1_JOB}", "cpu.shares", shares)
    put(tmp_path, f"cpu,cpuacct/{V1_JOB}", "cpu.cfs_quota_us", -1)
    put(tmp_path, f"cpu,cpuacct/{V1_JOB}", "cpu.cfs_period_us", 100000)
    return tmp_path


def test_v1_slot(tmp_path):
    v1_tree(tmp_path)
    assert read_cgroup_limits(V1_PROC, str(tmp_path)) == SlotLimits(2 * GIB, 2)


def test_v1_cpu_symlink_dir(tmp_path):
    v1_tree(tmp_path, shares=400)
    (tmp_path / "cpu").symlink_to("cpu,cpuacct")
    assert read_cgroup_limits(V1_PROC, str(tmp_path)).cpus == 4


def test_v1_parent_smaller(tmp_path):
    v1_tree(tmp_path)
    put(tmp_path, "memory/htcondor", "memory.limit_in_bytes", GIB)
    assert read_cgroup_limits(V1_PROC, str(tmp_path)).memory_bytes == GIB


def test_v1_default_shares_and_quota(tmp_path):
    v1_tree(tmp_path, shares=1024)
    assert read_cgroup_limits(V1_PROC, str(tmp_path)).cpus is None
    put(tmp_path, f"cpu,cpuacct/{V1_JOB}", "cpu.cfs_quota_us", 300000)
    assert read_cgroup_limits(V1_PROC, str(tmp_path)).cpus == 3


def test_v1_unlimited(tmp_path):
    v1_tree(tmp_path)
    put(tmp_path, f"memory/{V1_JOB}", "memory.limit_in_bytes", V1_UNLIMITED)
    assert read_cgroup_limits(V1_PROC, str(tmp_path)).memory_bytes is None


def test_v1_root_cgroup_shares_ignored(tmp_path):
    put(tmp_path, "cpu,cpuacct", "cpu.shares", 300)
    put(tmp_path, "memory", "memory.limit_in_bytes", V1_UNLIMITED)
    assert read_cgroup_limits("4:cpu,cpuacct:/\n11:memory:/\n", str(tmp_path)) == SlotLimits(None, None)


def test_no_cgroup_info(tmp_path):
    assert read_cgroup_limits("", str(tmp_path)) == SlotLimits(None, None)
    assert read_cgroup_limits("garbage\n", str(tmp_path)) == SlotLimits(None, None)
    assert read_cgroup_limits("0::/missing\n", str(tmp_path)) == SlotLimits(None, None)


# --- plan ---------------------------------------------------------------------------------

POLICY = SizingConfig(memory_per_core_mib=2048, min_memory_mib=256, min_cpus=1, max_cpus=0,
                      overhead_mib=0)


def plan(limits, policy=POLICY, host_cpus=8, host_mem=24576, hint_cpus=None, hint_mem=None):
    return plan_vm_size(limits, policy, host_cpus=host_cpus, host_memory_mib=host_mem,
                        hint_cpus=hint_cpus, hint_memory_mib=hint_mem)


def test_plan_from_cgroup():
    assert plan(SlotLimits(3 * GIB, 2)) == VMSize(2, 3072)
    assert plan(SlotLimits(8 * GIB, 2)) == VMSize(2, 4096)  # per-core cap


def test_plan_overhead():
    p = SizingConfig(overhead_mib=256)
    assert plan(SlotLimits(2 * GIB, 1), p) == VMSize(1, 1792)


def test_plan_hint_only_lowers():
    assert plan(SlotLimits(4 * GIB, 2), hint_cpus=8, hint_mem=65536) == VMSize(2, 4096)
    assert plan(SlotLimits(4 * GIB, 2), hint_cpus=1, hint_mem=1024) == VMSize(1, 1024)


def test_plan_no_cgroup():
    """When the cgroup says nothing (cgroup v2 gives a 1-CPU slot the kernel's default
    weight), the site minimum is used: the user-writable machine ad can never raise it."""
    assert plan(SlotLimits(None, None)) == VMSize(1, 2048)
    assert plan(SlotLimits(None, None), hint_cpus=4) == VMSize(1, 2048)
    assert plan(SlotLimits(None, None), hint_cpus=64) == VMSize(1, 2048)
    assert plan(SlotLimits(None, None), hint_cpus=4, hint_mem=1000) == VMSize(1, 1000)
    assert plan(SlotLimits(None, None), SizingConfig(min_cpus=2), hint_cpus=8) == VMSize(2, 4096)


def test_plan_cpuset_bounds_the_size():
    assert plan(SlotLimits(None, 4, cpu_cap=2)) == VMSize(2, 4096)
    assert plan(SlotLimits(None, None, cpu_cap=2), SizingConfig(min_cpus=4)) == VMSize(2, 4096)


def test_plan_host_and_policy_caps():
    assert plan(SlotLimits(None, 16), host_cpus=4) == VMSize(4, 8192)
    assert plan(SlotLimits(None, 16), SizingConfig(max_cpus=2)) == VMSize(2, 4096)
    assert plan(SlotLimits(None, 4), host_mem=3000) == VMSize(4, 3000)
    assert plan(SlotLimits(None, None), SizingConfig(min_cpus=2)) == VMSize(2, 4096)


def test_plan_never_above_cgroup_memory():
    for hint in (None, 100000):
        assert plan(SlotLimits(512 * MIB, 4), hint_mem=hint).memory_mib == 512


def test_plan_too_small():
    with pytest.raises(RefusedError) as e:
        plan(SlotLimits(200 * MIB, 1))
    assert "slot too small" in str(e.value) and "request_memory at least 256" in str(e.value)
    with pytest.raises(RefusedError, match="request_memory at least 356"):
        plan(SlotLimits(300 * MIB, 1), SizingConfig(overhead_mib=100))
    with pytest.raises(RefusedError):
        plan(SlotLimits(None, None), hint_mem=100)


def test_cpuset_lists():
    from racf_vm.vm.sizing import parse_cpu_list

    assert parse_cpu_list("0-3,6") == 5 and parse_cpu_list("7") == 1 and parse_cpu_list("0-63") == 64
    assert parse_cpu_list("") is None and parse_cpu_list("x") is None and parse_cpu_list(None) is None


def test_v2_default_weight_says_nothing_and_cpuset_caps(tmp_path):
    job = tmp_path / "slot" / "job"
    job.mkdir(parents=True)
    (job / "cpu.weight").write_text("100\n")  # the kernel default: HTCondor's 1-CPU slot, or nothing
    (job / "cpuset.cpus.effective").write_text("0-2\n")
    (job / "memory.max").write_text(str(2 * GIB) + "\n")
    limits = read_cgroup_limits("0::/slot/job\n", str(tmp_path))
    assert limits == SlotLimits(2 * GIB, None, cpu_cap=3)
    assert plan(limits, hint_cpus=8) == VMSize(1, 2048)
    (job / "cpu.weight").write_text("400\n")
    assert plan(read_cgroup_limits("0::/slot/job\n", str(tmp_path))) == VMSize(3, 2048)
