"""The guest runner's account rules (images.d/guest/runner.sh, "-- account"), run on the host.

The test images have almost no accounts, so the cases a real image has (sudo, wheel,
shared groups, sudoers rules) are checked here: the runner's own account section, cut out
of the script as it is, runs under busybox sh with busybox awk (the small guest) and under
dash with this machine's awk (the Debian guest), against crafted passwd/group/sudoers
files. tests/integration/test_guest_runner.py boots the real thing for the cases the
images can show.
"""

import os
import shutil
import subprocess

import pytest

RUNNER = os.path.join(os.path.dirname(__file__), "..", "..", "images.d", "guest", "runner.sh")
BUSYBOX = "/bin/busybox"

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
alice:x:3000:3000::/home/alice:/bin/sh
bob:x:3001:100::/home/bob:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """root:x:0:
daemon:x:1:
sudo:x:27:carol
users:x:100:
alice:x:3000:
proj:x:4000:dave,erin
docker:x:999:
racfjob:x:5000:
nogroup:x:65534:
"""
SUDOERS = """# This file MUST be edited with the 'visudo' command as root. racfjob alice
Defaults	env_reset
Defaults	secure_path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
Cmnd_Alias	RACFJOB = /usr/bin/racfjob
root	ALL=(ALL:ALL) ALL
%sudo	ALL=(ALL:ALL) ALL
@includedir /etc/sudoers.d
"""


def _account_section() -> str:
    text = open(RUNNER).read()
    start = text.index("# -- account ---")
    end = text.index("if setpriv --help", start)
    return text[start:end]


@pytest.fixture(scope="module")
def shells(tmp_path_factory):
    """(name, argv prefix, PATH) for each shell/awk pair the guests use."""
    bbdir = tmp_path_factory.mktemp("bb")
    os.symlink(BUSYBOX, bbdir / "awk")
    path = os.environ.get("PATH", "/usr/bin:/bin")
    return [("busybox", [BUSYBOX, "sh"], f"{bbdir}:{path}"), ("dash", [shutil.which("dash")], path)]


@pytest.fixture
def etc(tmp_path):
    d = tmp_path / "etc"
    (d / "sudoers.d").mkdir(parents=True)
    (d / "passwd").write_text(PASSWD)
    (d / "group").write_text(GROUP)
    (d / "sudoers").write_text(SUDOERS)
    return d


def run_accounts(shells, etc, uid, gid, user):
    """The runner's verdict in every shell: 'ok <group name>' or 'error <why>' (all agree)."""
    script = ('ETC=$1 uid=$2 gid=$3 user=$4 wd=/var/lib/condor/execute/dir_1\n'
              'fail() { printf "error %s\\n" "$*"; exit 1; }\n'
              'fail_job() { fail "job $*"; }\n'
              + _account_section() + 'printf "ok %s\\n" "$gname"\n')
    verdicts = set()
    for name, argv, path in shells:
        saved = {f: (etc / f).read_bytes() for f in ("passwd", "group")}
        res = subprocess.run(argv + ["-c", script, "sh", str(etc), str(uid), str(gid), user],
                             capture_output=True, text=True, env={"PATH": path}, timeout=30)
        assert res.stderr == "", (name, res.stderr)
        verdicts.add(res.stdout.strip().replace(str(etc), "ETC"))
        last = {f: (etc / f).read_bytes() for f in ("passwd", "group")}
        for f, data in saved.items():
            (etc / f).write_bytes(data)
    assert len(verdicts) == 1, verdicts
    return verdicts.pop(), last


@pytest.mark.parametrize("uid,gid,user,why", [
    (3000, 3000, "mallory", "uid 3000 is the image account alice"),
    (3000, 4000, "alice", "image account alice has primary group 3000, not 4000"),
    (2501, 2501, "daemon", "user name daemon is taken by uid 1 in the image"),
    (2501, 1, "racfjob", "gid 1 is the primary group of the image account daemon"),
    (2501, 100, "racfjob", "gid 100 is the primary group of the image account bob"),
    (2501, 65534, "racfjob", "gid 65534 is the primary group of the image account nobody"),
    (2501, 27, "racfjob", "gid 27 is the image group sudo"),
    (2501, 999, "racfjob", "gid 999 is the image group docker"),
    (2501, 4000, "dave", "gid 4000 (image group proj) has other members"),
    (2501, 2501, "carol", "user carol is a member of the image group sudo"),
])
def test_accounts_with_more_rights_are_refused(shells, etc, uid, gid, user, why):
    verdict, _ = run_accounts(shells, etc, uid, gid, user)
    assert verdict == f"error job {why}"


def test_duplicate_entries_are_refused(shells, etc):
    with open(etc / "passwd", "a") as f:
        f.write("alice2:x:3000:3000::/:/bin/sh\n")
    assert run_accounts(shells, etc, 3000, 3000, "alice")[0] == "error job uid 3000 is the image account alice2"
    (etc / "passwd").write_text(PASSWD)
    with open(etc / "group", "a") as f:
        f.write("other:x:6000:\nagain:x:6000:\n")
    assert run_accounts(shells, etc, 2501, 6000, "racfjob")[0] == "error job gid 6000 has 2 entries in /etc/group"


@pytest.mark.parametrize("rule", [
    "newuser ALL=(ALL) NOPASSWD: ALL",
    "%newuser ALL=(ALL) ALL",          # the job's new group (named after the user)
    "%#2501 ALL=(ALL) ALL",
    "#2501 ALL=(ALL) ALL",
    "ALL ALL=(ALL) NOPASSWD: ALL",
    "User_Alias EVERYONE = ALL\nEVERYONE ALL=(ALL) ALL",
    "User_Alias OPS = bob, newuser\nOPS ALL=(ALL) ALL",
    "Defaults:newuser !authenticate",
])
@pytest.mark.parametrize("where", ["sudoers.d/90-site", "sudoers", "doas.conf"])
def test_sudoers_naming_the_user_or_its_group_is_refused(shells, etc, rule, where):
    with open(etc / where, "a") as f:
        f.write(rule + "\n")
    verdict, _ = run_accounts(shells, etc, 2501, 2501, "newuser")
    assert verdict == f"error job ETC/{where} names user newuser or group newuser (or every user)"


def test_sudoers_naming_the_jobs_existing_group_is_refused(shells, etc):
    (etc / "sudoers.d" / "x").write_text("%racfjob ALL=(ALL) ALL\n")   # gid 5000 is "racfjob"
    verdict, _ = run_accounts(shells, etc, 2501, 5000, "newuser")
    assert verdict == "error job ETC/sudoers.d/x names user newuser or group racfjob (or every user)"


def test_a_fresh_account_is_added_and_nothing_else(shells, etc):
    """Comments, Defaults, command aliases and rules for others do not refuse; the user and
    its group are appended (the group is renamed when the user's name is a group already)."""
    verdict, files = run_accounts(shells, etc, 2501, 2501, "newuser")
    assert verdict == "ok newuser"
    assert files["passwd"] == (PASSWD + "newuser:x:2501:2501::/var/lib/condor/execute/dir_1:/bin/sh\n").encode()
    assert files["group"] == (GROUP + "newuser:x:2501:\n").encode()
    verdict, files = run_accounts(shells, etc, 2501, 2501, "racfjob")
    assert verdict == "ok racf2501" and files["group"] == (GROUP + "racf2501:x:2501:\n").encode()


def test_a_matching_existing_account_is_used_as_it_is(shells, etc):
    verdict, files = run_accounts(shells, etc, 3000, 3000, "alice")
    assert verdict == "ok alice"
    assert files["passwd"] == PASSWD.encode() and files["group"] == GROUP.encode()
    verdict, files = run_accounts(shells, etc, 2501, 5000, "racfjob")  # an existing empty group
    assert verdict == "ok racfjob" and files["group"] == GROUP.encode()
