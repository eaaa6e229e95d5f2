"""VM size from the slot the wrapper runs in.

The only slot size the job cannot forge is the cgroup HTCondor put it in (root-set
limits; htcondor.md §2.5): memory from ``memory.max`` (v2) / ``memory.limit_in_bytes``
(v1), the smallest value on the way up to the hierarchy root; CPUs from the weight
HTCondor sets (``cpu.weight``/``cpu.shares`` = 100 x Cpus) and from a CFS quota when one
is set. ``.machine.ad`` is user-writable (§2.3), so its Cpus/Memory may only lower the
result. QEMU started by libvirtd lives outside the job's cgroup, so the VM size computed
here is what actually enforces the slot (through libvirt).

Everything here is pure except ``read_slot``, which gathers those inputs: the text of
``/proc/self/cgroup``, the limits under the cgroup mount point and the host's size.
"""

import math
import os
from dataclasses import dataclass
from typing import Optional

from racf_vm.config import Profile, SizingConfig
from racf_vm.core.errors import RefusedError

MIB = 1024 * 1024
# v1 reports "no limit" as LONG_MAX rounded down to a page (9223372036854771712);
# anything this large is treated as unlimited.
V1_UNLIMITED = 2**62
V1_DEFAULT_SHARES = 1024
V2_DEFAULT_WEIGHT = 100


@dataclass(frozen=True)
class SlotLimits:
    """What the cgroup says about the slot; None = not limited / not known."""

    memory_bytes: Optional[int]
    cpus: Optional[int]
    cpu_cap: Optional[int] = None  # CPUs the cgroup may run on (cpuset): a bound, not a size


@dataclass(frozen=True)
class Slot:
    """Everything the sizing decision depends on that the job cannot write."""

    limits: SlotLimits
    host_cpus: int
    host_memory_mib: int


@dataclass(frozen=True)
class VMSize:
    cpus: int
    memory_mib: int


def _read_first_line(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            data = f.read(256)
    except OSError:
        return None
    try:
        lines = data.decode("ascii").splitlines()
    except UnicodeDecodeError:
        return None
    return lines[0].strip() if lines else None


def _read_int(path: str) -> Optional[int]:
    text = _read_first_line(path)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _ancestors(cgroup_path: str) -> Optional[list[str]]:
    """Relative paths from the cgroup itself up to its hierarchy root ("")."""
    parts = [p for p in cgroup_path.strip().split("/") if p]
    if any(p in (".", "..") for p in parts) or not cgroup_path.startswith("/"):
        return None
    return ["/".join(parts[:i]) for i in range(len(parts), -1, -1)]


def _min(a: Optional[int], b: Optional[int]) -> Optional[int]:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _quota_cpus(quota: int, period: int) -> Optional[int]:
    if quota <= 0 or period <= 0:
        return None
    return max(1, math.ceil(quota / period))


def _v1_limits(controllers: dict[str, str], dirs: dict[str, str], root: str) -> SlotLimits:
    memory = None
    mem_path = controllers.get("memory")
    chain = _ancestors(mem_path) if mem_path is not None else None
    for rel in chain or []:
        value = _read_int(os.path.join(root, dirs["memory"], rel, "memory.limit_in_bytes"))
        if value is not None and 0 < value < V1_UNLIMITED:
            memory = _min(memory, value)

    cpus = None
    cpu_path = controllers.get("cpu")
    chain = _ancestors(cpu_path) if cpu_path is not None else None
    if chain:
        base = os.path.join(root, dirs["cpu"])
        shares_found = False
        for rel in chain[:-1]:  # never the hierarchy root
            d = os.path.join(base, rel)
            shares = _read_int(os.path.join(d, "cpu.shares"))
            if not shares_found and shares is not None and shares != V1_DEFAULT_SHARES:
                shares_found = True
                if shares >= 100:
                    cpus = _min(cpus, shares // 100)
            quota = _read_int(os.path.join(d, "cpu.cfs_quota_us"))
            period = _read_int(os.path.join(d, "cpu.cfs_period_us"))
            if quota is not None and period is not None:
                cpus = _min(cpus, _quota_cpus(quota, period))
    return SlotLimits(memory_bytes=memory, cpus=cpus)


def parse_cpu_list(text: Optional[str]) -> Optional[int]:
    """How many CPUs a cpuset list such as ``0-3,6`` names (None when unreadable)."""
    if not text:
        return None
    count = 0
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            count += int(hi or lo) - int(lo) + 1
    except ValueError:
        return None
    return count if count > 0 else None


def _v2_limits(path: str, root: str) -> SlotLimits:
    chain = _ancestors(path)
    if not chain:
        return SlotLimits(None, None)
    cpu_cap = parse_cpu_list(_read_first_line(os.path.join(root, chain[0], "cpuset.cpus.effective")))
    memory = None
    cpus = None
    weight_found = False
    for rel in chain:
        d = os.path.join(root, rel)
        text = _read_first_line(os.path.join(d, "memory.max"))
        if text is not None and text != "max":
            try:
                value = int(text)
            except ValueError:
                value = 0
            if value > 0:
                memory = _min(memory, value)
        if rel == "":
            continue  # the root's weight and quota say nothing about the slot
        weight = _read_int(os.path.join(d, "cpu.weight"))
        if not weight_found and weight is not None and weight != V2_DEFAULT_WEIGHT:
            weight_found = True
            if weight >= 100:
                cpus = _min(cpus, weight // 100)
        quota_line = _read_first_line(os.path.join(d, "cpu.max"))
        if quota_line:
            fields = quota_line.split()
            if len(fields) == 2 and fields[0] != "max":
                try:
                    cpus = _min(cpus, _quota_cpus(int(fields[0]), int(fields[1])))
                except ValueError:
                    pass
    return SlotLimits(memory_bytes=memory, cpus=cpus, cpu_cap=cpu_cap)


def read_cgroup_limits(proc_self_cgroup_text: str,
                       sysfs_root: str = "/sys/fs/cgroup") -> SlotLimits:
    """The slot's memory and CPU limits from the cgroup this process is in.

    v1 controllers named in ``/proc/self/cgroup`` win over the v2 ``0::`` line (hybrid
    hosts keep their limits in v1); with v1 the controller's hierarchy is looked up under
    ``<root>/memory`` and ``<root>/cpu``. Unknown values are None, never guesses.

    CPU is a heuristic: HTCondor sets the weight to 100 x Cpus, so a weight different from
    the kernel default in a non-root cgroup is read as a CPU count; a CFS quota, when set,
    caps it (rounded up).
    """
    v1: dict[str, str] = {}
    v1_dirs: dict[str, str] = {}
    v2_path: Optional[str] = None
    for line in proc_self_cgroup_text.splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        hier, ctrls, path = fields
        if hier == "0" and ctrls == "":
            v2_path = path
            continue
        for ctrl in ctrls.split(","):
            if ctrl == "cpuset":
                v1["cpuset"] = path
            elif ctrl in ("memory", "cpu"):
                v1[ctrl] = path
                # usually <root>/cpu is a symlink to <root>/cpu,cpuacct; use either
                v1_dirs[ctrl] = ctrl if os.path.isdir(os.path.join(sysfs_root, ctrl)) else ctrls
    v1_result = _v1_limits(v1, v1_dirs, sysfs_root) if v1 else SlotLimits(None, None)
    v2_result = _v2_limits(v2_path, sysfs_root) if v2_path is not None else SlotLimits(None, None)
    cpuset_v1 = None
    if "cpuset" in v1:
        cpuset_v1 = parse_cpu_list(_read_first_line(
            os.path.join(sysfs_root, "cpuset", v1["cpuset"].lstrip("/"), "cpuset.effective_cpus")))
    return SlotLimits(
        memory_bytes=v1_result.memory_bytes if "memory" in v1 else v2_result.memory_bytes,
        cpus=v1_result.cpus if "cpu" in v1 else v2_result.cpus,
        cpu_cap=cpuset_v1 if "cpuset" in v1 else v2_result.cpu_cap,
    )


def plan_vm_size(limits: SlotLimits, policy: SizingConfig, host_cpus: int,
                 host_memory_mib: int, hint_cpus: Optional[int] = None,
                 hint_memory_mib: Optional[int] = None) -> VMSize:
    """Decide the VM's vCPUs and memory.

    cpus: the cgroup's count if known, else ``min_cpus`` (never a number from the
    user-writable machine ad: a hint only ever lowers); at least ``min_cpus`` and at most
    the host's CPUs, the cgroup's cpuset and ``max_cpus`` (when not 0).
    memory: min(cgroup memory - overhead, hint - overhead, cpus x memory_per_core, host
    memory), so never above the slot; below ``min_memory_mib`` the job is refused.
    """
    upper = max(1, host_cpus)
    if policy.max_cpus:
        upper = min(upper, policy.max_cpus)
    if limits.cpu_cap:
        upper = min(upper, limits.cpu_cap)
    cpus = limits.cpus if limits.cpus is not None else policy.min_cpus
    if hint_cpus is not None and hint_cpus > 0:
        cpus = min(cpus, hint_cpus)
    cpus = min(max(cpus, policy.min_cpus), upper)

    memory = min(cpus * policy.memory_per_core_mib, host_memory_mib)
    slot_mib = None
    if limits.memory_bytes is not None:
        slot_mib = limits.memory_bytes // MIB
    if hint_memory_mib is not None and hint_memory_mib > 0:
        slot_mib = hint_memory_mib if slot_mib is None else min(slot_mib, hint_memory_mib)
    if slot_mib is not None:
        memory = min(memory, slot_mib - policy.overhead_mib)
    if memory < policy.min_memory_mib:
        need = policy.min_memory_mib + policy.overhead_mib
        have = slot_mib if slot_mib is not None else host_memory_mib
        raise RefusedError(
            f"slot too small: {max(memory, 0)} MiB left for the VM out of {have} MiB; "
            f"request_memory at least {need} (MiB)"
        )
    return VMSize(cpus=cpus, memory_mib=memory)


def apply_profile(size: VMSize, profile: Optional[Profile]) -> VMSize:
    """The slot's size, lowered to the instance profile the job asked for: a profile is an
    upper bound and never raises the VM above its slot (the site keeps every profile at or
    above min_cpus/min_memory_mib, so the result still meets them)."""
    if profile is None:
        return size
    return VMSize(cpus=min(size.cpus, profile.cpus), memory_mib=min(size.memory_mib, profile.memory_mib))


def read_slot(sysfs_root: str = "/sys/fs/cgroup") -> Slot:
    """The slot this process runs in, read from the kernel (the only I/O of this module)."""
    with open("/proc/self/cgroup") as f:
        limits = read_cgroup_limits(f.read(), sysfs_root)
    host_memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MIB
    return Slot(limits, host_cpus=os.cpu_count() or 1, host_memory_mib=host_memory)
