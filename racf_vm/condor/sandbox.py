"""Moving job files between the HTCondor sandbox and the guest.

All of this runs in children that have become the job's user (racf_vm.privsep), so the
sandbox is only ever read and written with the user's own rights: root never follows a
path the user controls.

Input: ``write_input_tar`` tars the sandbox's directories and regular files and returns,
beside the count, the input *manifest*: one fingerprint per regular file it sent (name,
inode, size, mtime and ctime, hashed). The wrapper keeps it and hands it back to
``extract_output_tar``.

Output: the guest sends back only what the job created or changed (images.d/guest/runner.sh).
``extract_output_tar`` writes a regular file over an existing sandbox file only when that
file is still exactly as the manifest recorded it: a file changed, replaced or created in
the sandbox while the job ran (by another process of the job, say) is a *conflict* and
keeps its host version. The rules, member by member (counts and the first few names are
returned for the log):

- unsafe names (absolute, ``..``), HTCondor's own files and the input-only ads: skipped;
- sparse members, hard links, symbolic links, devices, FIFOs, other types: refused;
- a symbolic link or a non-directory where the member's path needs a directory, or, where
  the member is a file, a sandbox entry that is not a regular file, or a regular file not
  in the manifest as it is now, or one another uid owns: conflict, the sandbox's entry
  stays as it is (nothing of a different type is ever removed or replaced);
- a directory member: made (its mode | 0700) when absent, an existing one used as it is;
- a file member: the old regular file (the user's own, unchanged since the input) is
  unlinked and a new one created ``O_EXCL | O_NOFOLLOW``; a file absent from the sandbox
  is created, even if the manifest had it (deleted on the host meanwhile: the job's copy
  comes back);
- every byte written counts against ``max_bytes``; over it, UsageError (a file cut short
  is removed). The archive's declared sizes only ever stop a file early, never allow one.
"""

import hashlib
import os
import posixpath
import stat
import tarfile
from typing import BinaryIO, Iterable, Optional

from racf_vm.condor import outfiles
from racf_vm.condor.credentials import withheld_paths
from racf_vm.condor.outfiles import Conflict
from racf_vm.core.errors import UsageError

# Files HTCondor owns in the sandbox: never sent to the guest (stdout/stderr are being
# written by us while the job runs) or overwritten from the guest's output.
CONDOR_FILES = frozenset(
    {
        "_condor_stdout",
        "_condor_stderr",
        ".job_wrapper_failure",
        ".chirp.config",
        ".update.ad",
        ".execution_overlay.ad",
        ".condor_pid_ns_status",
        ".condor_container_launched",
    }
)
# Read-only in the guest: sent in, never taken back.
INPUT_ONLY = frozenset({".job.ad", ".machine.ad"})

FAILURE_FILE = ".job_wrapper_failure"


def fingerprint(rel: str, st: os.stat_result) -> str:
    """One manifest entry: a regular file's name and state (inode, size, mtime, ctime),
    hashed to 16 hex digits. Any write, truncation, chmod, rename over it or utime on the
    host changes it (the kernel sets ctime; nobody can set it back)."""
    h = hashlib.blake2b(os.fsencode(rel), digest_size=8)
    h.update(b"\0%d:%d:%d:%d" % (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return h.hexdigest()


def write_input_tar(out: BinaryIO, workdir: str, withhold_env: Optional[dict] = None) -> dict:
    """Write a tar of the sandbox's regular files and directories to ``out``.

    With ``withhold_env`` (the job's environment), the job's credentials are left out
    (racf_vm.condor.credentials: for guests that must not have them).
    Returns ``{"entries": n, "manifest": [fingerprint, ...], "withheld": [path, ...]}`` (one
    fingerprint per regular file sent, as fstat saw it when it was opened): the wrapper
    passes the manifest to ``extract_output_tar``.
    """
    count = 0
    manifest = []
    withheld = set()
    if withhold_env is not None:
        withheld = set(withheld_paths(withhold_env, workdir, os.listdir(workdir)))
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for rel in _walk(workdir):
            if rel in withheld or any(rel.startswith(w + "/") for w in withheld):
                continue
            path = os.path.join(workdir, rel)
            st = os.lstat(path)
            info = tarfile.TarInfo(rel)
            info.mode = stat.S_IMODE(st.st_mode) & 0o777
            info.mtime = int(st.st_mtime)
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif stat.S_ISREG(st.st_mode):
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                with os.fdopen(fd, "rb") as f:
                    fst = os.fstat(fd)
                    info.size = fst.st_size
                    tar.addfile(info, f)
                manifest.append(fingerprint(rel, fst))
            else:
                continue
            count += 1
    return {"entries": count, "manifest": sorted(manifest), "withheld": sorted(withheld)}


def _walk(top: str):
    """Relative paths of directories and regular files under ``top``, no symlinks."""
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        rel_dir = os.path.relpath(dirpath, top)
        for name in sorted(dirnames + filenames):
            if rel_dir == "." and name in CONDOR_FILES:
                continue
            rel = name if rel_dir == "." else os.path.join(rel_dir, name)
            if not os.path.islink(os.path.join(top, rel)):
                yield rel


def extract_output_tar(tar_file: BinaryIO, workdir: str, manifest: Iterable[str], max_bytes: int) -> dict:
    """Unpack the guest's output archive into the sandbox, as the job's user.

    ``manifest``: what ``write_input_tar`` returned for this job (an empty one: no
    existing file is ever replaced). ``max_bytes``: the cap on the bytes written.
    Returns counts for the log (see the module's docstring): written, bytes, skipped,
    refused, conflicts, failed, and first_refused / first_conflicts / first_failed (a few
    ``"name: reason"`` each; first_failure is the first failed one, or "").
    """
    known = frozenset(manifest)
    tally = outfiles.Tally(max_bytes)
    os.umask(0o022)  # this child only: the shim's 077 would hide results from the user's group
    root_fd = os.open(workdir, outfiles.DIR_FLAGS)
    try:
        with tarfile.open(fileobj=tar_file, mode="r|") as tar:
            for member in tar:
                _extract_member(tar, member, root_fd, known, tally)
    except tarfile.TarError as exc:
        raise UsageError(f"the guest's output archive is damaged: {exc}") from exc
    finally:
        os.close(root_fd)
    return tally.result()


def _extract_member(tar, member, root_fd: int, known: frozenset, tally: outfiles.Tally) -> None:
    rel = _safe_name(member.name)
    if rel is None or rel.split("/")[0] in CONDOR_FILES | INPUT_ONLY:
        tally.note("skipped")
        return
    why = outfiles.refusal(member)
    if why is not None:
        tally.note("refused", rel, why)
        return
    try:
        if member.isdir():
            os.close(outfiles.open_dir(root_fd, rel.split("/"), (member.mode & 0o777) | 0o700))
        else:
            _extract_file(tar, member, rel, root_fd, known, tally)
    except Conflict as exc:
        tally.note("conflicts", rel, str(exc))
    except OSError as exc:
        # As the user, in the user's own sandbox: whatever the user made unwritable
        # stays as it is; the rest comes back.
        tally.note("failed", rel, exc.strerror or str(exc))


def _extract_file(tar, member, rel: str, root_fd: int, known: frozenset, tally: outfiles.Tally) -> None:
    parent, name = posixpath.split(rel)
    dir_fd = outfiles.open_dir(root_fd, parent.split("/")) if parent else os.dup(root_fd)
    try:
        st = outfiles.entry(dir_fd, name)
        if st is not None:
            if not stat.S_ISREG(st.st_mode):
                raise Conflict(f"a {outfiles.describe(st)} in the sandbox")
            if fingerprint(rel, st) not in known:
                raise Conflict("changed or created in the sandbox while the job ran")
            if st.st_uid != os.geteuid():
                raise Conflict(f"owned by uid {st.st_uid} in the sandbox")
        tally.check_room(member.size)
        if st is not None:
            os.unlink(name, dir_fd=dir_fd)
        outfiles.write_new_file(dir_fd, name, tar.extractfile(member), (member.mode & 0o777) | 0o600, tally)
        tally.note("written")
    finally:
        os.close(dir_fd)


def _safe_name(name: str):
    if name.startswith("/") or "\0" in name:
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    return "/".join(parts)


def write_failure_file(workdir: str, message: str) -> bool:
    """Tell HTCondor this attempt failed for reasons outside the job (it requeues it)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(os.path.join(workdir, FAILURE_FILE), flags, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(message.rstrip("\n") + "\n")
    return True


def archive_complete(f: BinaryIO) -> bool:
    """True when ``f`` holds a whole tar archive: headers walk to the end-of-archive blocks.

    Lets the host stop waiting for the guest's power-off once the output is all here: the
    overlay is thrown away anyway, so nothing else in the guest matters after that.
    """
    offset = 0
    while True:
        f.seek(offset)
        header = f.read(512)
        if len(header) < 512:
            return False
        if header == bytes(512):
            return f.read(512) == bytes(512)
        size = _tar_size(header[124:136])
        if size is None:
            return False
        offset += 512 + (size + 511) // 512 * 512


def _tar_size(field: bytes):
    if field[0] & 0x80:  # GNU base-256 for sizes of 8 GiB and more
        return int.from_bytes(field[1:], "big")
    digits = field.strip(b" \0")
    try:
        return int(digits, 8) if digits else 0
    except ValueError:
        return None
