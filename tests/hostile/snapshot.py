""""Nothing changed on the host": a comparable snapshot of everything a job could touch.

Taken before and after a hostile job; the two must be equal. It records:
- libvirt domains (every name, not only racf-vm-*);
- the test state tree (/var/lib/racf-vm-test/state): every entry's type, owner, mode
  (the preparation account's libguestfs cache under prepare-home/ at its top level only);
- the trusted files: test config and catalog, the base images and their boot files, the
  guest runner: owner, mode, size, mtime (a chown or write by libvirt/qemu would show);
- the firewall: `nft -s list ruleset` and `iptables-save`/`ip6tables-save` without counters;
- new files owned by the job user or root under /tmp, /var/tmp, /dev/shm (depth 3), and any
  file owned by the job user anywhere under /etc, /var/lib/racf-vm-test/state, /root;
- libvirt networks, host bridges and dnsmasq instances;
- leftover processes: QEMU of racf-vm domains, anything of the job user or of racf-prep.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
from typing import Iterable

from tests.support import testenv

JOB_UID = testenv.JOB_USERS["racfjob"]
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
ROOT_NAMES = ("libguestfs", "guestfs", "gfs-", "racf", "qemu", "overlay", "input.tar", "output.tar", "vm")


def _entry(path: str, with_content: bool) -> tuple:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return (path, "missing")
    kind = stat.S_IFMT(st.st_mode)
    row = (path, kind, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
    if with_content and stat.S_ISREG(st.st_mode):
        row += (st.st_size, st.st_mtime_ns)
    if stat.S_ISLNK(st.st_mode):
        row += (os.readlink(path),)
    return row


def _tree(root: str, *, with_content: bool, shallow: Iterable[str] = ()) -> list:
    rows = []
    shallow = set(shallow)
    for dirpath, dirnames, filenames in os.walk(root):
        rows.append(_entry(dirpath, with_content))
        if dirpath in shallow:
            dirnames[:] = []
            continue
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            rows.append(_entry(os.path.join(dirpath, name), with_content))
    return sorted(rows, key=repr)


def _domains() -> list:
    import libvirt

    conn = libvirt.open("qemu:///system")
    try:
        return sorted(d.name() for d in conn.listAllDomains())
    finally:
        conn.close()


def _cmd(argv) -> str:
    if not os.path.exists(argv[0]):
        return ""
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    lines = [l for l in r.stdout.splitlines() if not l.startswith("#")]  # timestamps
    return "\n".join(lines)


def _firewall() -> dict:
    return {
        "nft": _cmd(["/usr/sbin/nft", "-s", "list", "ruleset"]),
        "iptables": _cmd(["/usr/sbin/iptables-save"]),
        "ip6tables": _cmd(["/usr/sbin/ip6tables-save"]),
    }


def _networks() -> list:
    """libvirt networks (active or not), host bridges and the dnsmasq instances serving them."""
    import json

    import libvirt

    conn = libvirt.open("qemu:///system")
    try:
        rows = sorted(("network", n.name(), bool(n.isActive())) for n in conn.listAllNetworks())
    finally:
        conn.close()
    links = json.loads(_cmd(["/usr/sbin/ip", "-j", "link", "show", "type", "bridge"]) or "[]")
    rows += sorted(("bridge", link["ifname"]) for link in links)
    rows += sorted(("dnsmasq", cmd) for cmd in _process_cmdlines() if cmd.startswith("/usr/sbin/dnsmasq"))
    return rows


def _process_cmdlines(uids=None) -> list:
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if uids is not None and os.stat(f"/proc/{pid}").st_uid not in uids:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                out.append(f.read().replace(b"\0", b" ").decode(errors="replace").strip())
        except OSError:
            continue
    return sorted(c for c in out if c)


def _leftover_processes() -> list:
    """What a job may start and must not leave running: QEMU of racf-vm domains, processes
    of the job user and of the preparation account (libguestfs)."""
    import pwd

    uids = {JOB_UID}
    try:
        uids.add(pwd.getpwnam("racf-prep").pw_uid)
    except KeyError:
        pass
    rows = [("user", c) for c in _process_cmdlines(uids)]
    rows += [("qemu", c.split("guest=", 1)[1].split(",")[0]) for c in _process_cmdlines()
             if c.startswith("/usr/bin/qemu-system") and "guest=racf-vm-" in c]
    return sorted(rows)


def _hashed(rows: list) -> list:
    """Small files: content hash instead of mtime (rewriting the same bytes is no change)."""
    import hashlib

    out = []
    for row in rows:
        if len(row) == 7 and row[1] == stat.S_IFREG:
            with open(row[0], "rb") as f:
                row = row[:5] + (hashlib.sha256(f.read()).hexdigest(),)
        out.append(row)
    return out


def _trusted_files() -> list:
    rows = _hashed(_tree(str(testenv.TEST_ETC), with_content=True))
    rows += _hashed([_entry(str(testenv.RUNNER), True)])
    if testenv.IMAGE_CACHE.is_dir():
        for image_dir in testenv.IMAGE_CACHE.iterdir():
            if image_dir.name.startswith(("small-", "debian-")):
                rows += _tree(str(image_dir), with_content=True)
    return rows


def _scratch_files(exclude: Iterable[str]) -> set:
    found = set()
    exclude = tuple(str(e) for e in exclude)
    for top in SCRATCH_DIRS:
        base_depth = top.count("/")
        for dirpath, dirnames, filenames in os.walk(top):
            if dirpath.startswith(exclude):
                dirnames[:] = []
                continue
            dirnames[:] = [d for d in dirnames if not d.startswith((".guestfs-", "pytest-of-"))
                           and not os.path.join(dirpath, d).startswith(exclude)]
            if dirpath.count("/") - base_depth >= 3:
                dirnames[:] = []
            for name in filenames + dirnames:
                p = os.path.join(dirpath, name)
                try:
                    st = os.lstat(p)
                except FileNotFoundError:
                    continue
                # Every new file of the job user; root's only where racf-vm and its
                # helpers (libguestfs, qemu-img) would put them (other root processes of
                # the host are not this suite's business).
                if st.st_uid == JOB_UID or (st.st_uid == 0 and name.startswith(ROOT_NAMES)):
                    found.add((p, st.st_uid))
    return found


def _job_user_files() -> list:
    """Files owned by the job user where only root may write (bounded walk: top level of
    /etc and /root, the racf-vm trees in full)."""
    found = []
    tops = [("/etc", 1), ("/root", 1), (str(testenv.TEST_ETC), 9), (str(testenv.STATE_DIR), 3),
            ("/usr/local/share/racf-vm", 9), (str(testenv.LIBEXEC), 9), ("/usr/local/racf", 9),
            ("/opt/racf-vm/venv/bin", 1), ("/etc/libvirt", 2)]
    for top, depth in tops:
        base = top.rstrip("/").count("/")
        for dirpath, dirnames, filenames in os.walk(top):
            if dirpath.count("/") - base >= depth:
                dirnames[:] = []
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                try:
                    if os.lstat(p).st_uid == JOB_UID:
                        found.append(p)
                except FileNotFoundError:
                    pass
    return sorted(found)


@dataclasses.dataclass
class Snapshot:
    domains: list
    state: list
    trusted: list
    firewall: dict
    scratch: set
    job_user_files: list
    networks: list
    processes: list

    @classmethod
    def take(cls, exclude: Iterable[str] = ()) -> "Snapshot":
        return cls(
            domains=_domains(),
            state=_tree(str(testenv.STATE_DIR), with_content=False,
                        shallow=[str(testenv.STATE_DIR / "prepare-home")]),
            trusted=_trusted_files(),
            firewall=_firewall(),
            scratch=_scratch_files(exclude),
            job_user_files=_job_user_files(),
            networks=_networks(),
            processes=_leftover_processes(),
        )

    def diff(self, after: "Snapshot") -> list:
        """Human-readable differences (empty when nothing changed).

        RACF_HOSTILE_SHARED=1 (a development host where other suites run at the same time):
        ignore domains, job dirs and firewall changes (they cannot be told apart from the
        other suites'). CI runs strict.
        """
        if os.environ.get("RACF_HOSTILE_SHARED") == "1":
            keep = lambda rows: [r for r in rows if "/jobs/" not in r[0]]
            self = dataclasses.replace(self, domains=[], state=keep(self.state), firewall={}, networks=[],
                                       processes=[])
            after = dataclasses.replace(after, domains=[], state=keep(after.state), firewall={}, networks=[],
                                        processes=[])
        out = []
        for f in ("domains", "state", "trusted", "job_user_files", "networks", "processes"):
            a, b = getattr(self, f), getattr(after, f)
            if a != b:
                out.append(f"{f}: removed {sorted(set(map(repr, a)) - set(map(repr, b)))}, "
                           f"added {sorted(set(map(repr, b)) - set(map(repr, a)))}")
        for k in self.firewall:
            if self.firewall[k] != after.firewall[k]:
                out.append(f"firewall {k} changed:\n{self.firewall[k]}\n---\n{after.firewall[k]}")
        new = after.scratch - self.scratch
        if new:
            out.append(f"new files in scratch dirs: {sorted(new)}")
        return out


def assert_unchanged(before: Snapshot, exclude: Iterable[str] = ()) -> None:
    diff = before.diff(Snapshot.take(exclude))
    assert not diff, "host state changed:\n" + "\n".join(diff)
