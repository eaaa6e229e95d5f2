"""racf_vm.condor (intake, environment, ads, request): argv, env blob, job/machine ads, the request and its JSON."""

import dataclasses
import json
import os

import classad2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from racf_vm.condor.ads import read_job_ad, read_machine_ad
from racf_vm.condor.arguments import quote_v2
from racf_vm.condor.environment import filter_guest_env, parse_env_blob
from racf_vm.condor.intake import build_request, build_request_json
from racf_vm.condor.request import JobRequest
from racf_vm.condor.wrapperargs import WrapperArgs, parse_wrapper_argv
from racf_vm.config import LimitsConfig
from racf_vm.core.errors import RefusedError, UsageError
from racf_vm.images.catalog import validate_image_name

LIMITS = LimitsConfig()

# --- wrapper argv ------------------------------------------------------------------------


def image_of(argv):
    return validate_image_name(parse_wrapper_argv(argv).image)


@pytest.mark.parametrize(
    "argv", [["-i", "sl_53"], ["--image", "sl_53"], ["-isl_53"], ["--image=sl_53"]]
)
def test_argv_ok(argv):
    assert image_of(argv) == "sl_53"
    assert parse_wrapper_argv(argv) == WrapperArgs("sl_53", None)


@pytest.mark.parametrize(
    "argv",
    [["-i", "sl_53", "-p", "medium"], ["-p", "medium", "-i", "sl_53"], ["-isl_53", "-pmedium"],
     ["--image=sl_53", "--profile=medium"], ["--profile", "medium", "--image", "sl_53"]],
)
def test_argv_with_a_profile(argv):
    assert parse_wrapper_argv(argv) == WrapperArgs("sl_53", "medium")


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["-i", "a", "-p"], "-p needs a value"),
        (["-i", "a", "--profile"], "--profile needs a value"),
        (["-i", "a", "-p", "m", "-p", "m"], "--profile is given twice"),
        (["-i", "a", "-p", "Medium"], "invalid profile name"),
        (["-i", "a", "-p", "../x"], "invalid profile name"),
        (["-i", "a", "-p", "1x"], "invalid profile name"),
        (["-i", "a", "--profile="], "invalid profile name"),
        (["-p", "medium"], "no image given"),
        (["-i", "a", "-P", "medium"], "unexpected argument"),
    ],
)
def test_argv_bad_profile(argv, needle):
    with pytest.raises(UsageError, match="usage: vm -i IMAGE") as e:
        parse_wrapper_argv(argv)
    assert needle in str(e.value)


def test_the_request_carries_the_profile_and_checks_it_again():
    req = JobRequest(**base_request(profile="large")).validate(LIMITS)
    assert JobRequest.from_json(req.to_json(), LIMITS).profile == "large"
    assert JobRequest.from_json(JobRequest(**base_request()).to_json(), LIMITS).profile is None
    forged = json.loads(req.to_json())
    for bad in ("Large", "a b", "", 7, ["large"]):
        forged["profile"] = bad
        with pytest.raises(UsageError):
            JobRequest.from_json(json.dumps(forged), LIMITS)


@pytest.mark.parametrize(
    "argv, needle",
    [
        ([], "no image given"),
        (["-i"], "needs a value"),
        (["--image"], "needs a value"),
        (["-x"], "unexpected argument"),
        (["sl_53"], "unexpected argument"),
        (["-i", "a", "-i", "b"], "given twice"),
        (["-i", "a", "extra"], "unexpected argument"),
        (["-i", "../../etc/shadow"], "invalid image name"),
        (["-i", ""], "invalid image name"),
        (["--help"], "usage:"),
        (["-i", "a", "--export-scratch=yes"], "takes no value"),
        (["-i", "a", "--scratch"], "needs a value"),
        (["-i", "a", "--data", "x.img", "--data", "y.img"], "given twice"),
    ],
)
def test_argv_bad(argv, needle):
    with pytest.raises(UsageError) as e:
        image_of(argv)
    assert needle in str(e.value)


def test_argv_errors_carry_usage():
    with pytest.raises(UsageError, match="usage: vm -i IMAGE"):
        parse_wrapper_argv(["-z"])


def test_argv_storage_options():
    a = parse_wrapper_argv(["-i", "x", "--scratch", "10G:/work", "--data=in.qcow2:/data:rw",
                            "--data-format", "qcow2", "--export-scratch"])
    assert (a.image, a.scratch, a.data, a.data_format, a.export_scratch) == (
        "x", "10G:/work", "in.qcow2:/data:rw", "qcow2", True)
    assert parse_wrapper_argv(["-i", "x"]).scratch is None


# --- env blob -----------------------------------------------------------------------------


def test_env_blob_basic():
    blob = b"A=1\0B=x=y\0EMPTY=\0NL=a\nb\0\0"
    assert parse_env_blob(blob, 1000) == {"A": "1", "B": "x=y", "EMPTY": "", "NL": "a\nb"}


@pytest.mark.parametrize("entry", [b"1X=1", b"=v", b"A-B=1", b"noequals", b"BASH_FUNC_f%%=() { :; }",
                                   b"\xff=1", b"A B=1", b""])
def test_env_blob_drops_bad_names(entry):
    assert parse_env_blob(entry + b"\0OK=1", 1000) == {"OK": "1"}


def test_env_blob_bad_value_and_dup_and_size():
    with pytest.raises(UsageError, match="X is not valid UTF-8"):
        parse_env_blob(b"X=\xff\xfe\0", 100)
    with pytest.raises(UsageError, match="set twice"):
        parse_env_blob(b"X=1\0X=2\0", 100)
    with pytest.raises(UsageError, match="more than the limit"):
        parse_env_blob(b"X=" + b"a" * 100, 50)


env_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
env_values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                     max_size=50)


@settings(max_examples=300)
@given(st.dictionaries(env_names, env_values, max_size=20))
def test_env_blob_round_trip(env):
    blob = b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items())
    assert parse_env_blob(blob, 1 << 20) == env


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_env_blob_arbitrary_bytes(blob):
    try:
        env = parse_env_blob(blob, 200)
    except UsageError:
        return
    for k, v in env.items():
        assert k.isascii() and "\0" not in v and "=" not in k


# --- guest env filter ---------------------------------------------------------------------


def test_filter_guest_env():
    env = {
        "PATH": "/bin", "HOME": "/home/u", "MYVAR": "x", "_CONDOR_SCRATCH_DIR": "/s",
        "_CONDOR_JOB_AD": "/s/.job.ad", "TMPDIR": "/s",
        "LD_PRELOAD": "/evil.so", "LD_LIBRARY_PATH": "/x", "BASH_ENV": "/x", "ENV": "/x",
        "IFS": "x", "SHELLOPTS": "xtrace", "PS4": "$(id)", "GCONV_PATH": "/x",
        "GLIBC_TUNABLES": "x", "_CONDOR_CHIRP_CONFIG": "/s/.chirp.config",
        "_CONDOR_WRAPPER_ERROR_FILE": "/s/.job_wrapper_failure", "CONDOR_STARTER_PID": "1",
        "SSH_AUTH_SOCK": "/tmp/ssh",
    }
    out = filter_guest_env(env)
    assert out == tuple(sorted(out))
    assert dict(out) == {
        "PATH": "/bin", "HOME": "/home/u", "MYVAR": "x", "_CONDOR_SCRATCH_DIR": "/s",
        "_CONDOR_JOB_AD": "/s/.job.ad", "TMPDIR": "/s",
    }


# --- job ad -------------------------------------------------------------------------------


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_job_ad_old_syntax(tmp_path):
    p = write(tmp_path, ".job.ad",
              'ClusterId = 42\nProcId = 3\nvm_command = "/bin/job.sh"\n'
              'VM_ARGS = "/data/file 42"\nOther = foo(bar)\n')
    info = read_job_ad(p, 10000)
    assert (info.command, info.args, info.cluster, info.proc) == ("/bin/job.sh", ("/data/file", "42"), 42, 3)


def test_job_ad_v2_args(tmp_path):
    p = write(tmp_path, ".job.ad", 'VM_Command = "x"\nVM_Args = "\\"\'a b\' c\\""\n')
    assert read_job_ad(p, 10000).args == ("a b", "c")


def test_job_ad_defaults(tmp_path):
    p = write(tmp_path, ".job.ad", 'VM_Command = "x"\n')
    info = read_job_ad(p, 10000)
    assert info.args == () and info.cluster == 0 and info.proc == 0


@pytest.mark.parametrize(
    "text, needle",
    [
        ("ClusterId = 1\n", "no VM_Command"),
        ("VM_Command = 3\n", "must be a quoted string"),
        ("VM_Command = strcat(\"a\", \"b\")\n", "must be a quoted string"),
        ('VM_Command = ""\n', "empty"),
        ('VM_Command = "x"\nVM_Args = 5\n', "VM_Args must be a quoted string"),
        ('VM_Command = "x"\nVM_Args = "\\"a b"\n', "unbalanced"),
        ('VM_Command = "x"\nClusterId = "1"\n', "ClusterId"),
        ('VM_Command = "x"\nProcId = -1\n', "ProcId"),
        ("garbage ][ =\n", "no VM_Command"),
        ('VM_Command = "x"\nVM_Args = "a\nb"\n', "could not be parsed at VM_Args"),
        ('A = "x\ny"\nVM_Command = "x"\n', "could not be parsed at VM_Command"),
    ],
)
def test_job_ad_bad(tmp_path, text, needle):
    p = write(tmp_path, ".job.ad", text)
    with pytest.raises(UsageError) as e:
        read_job_ad(p, 10000)
    assert needle in str(e.value)


def test_job_ad_hint_mentions_submit_file(tmp_path):
    with pytest.raises(UsageError, match=r"\+VM_Command ="):
        read_job_ad(str(tmp_path / "missing"), 100)
    p = write(tmp_path, ".job.ad", "A = 1\n")
    with pytest.raises(UsageError, match=r"\+VM_Command ="):
        read_job_ad(p, 100)


def test_job_ad_size_and_type(tmp_path):
    p = write(tmp_path, ".job.ad", 'VM_Command = "x"\n' + "# pad\n" * 200)
    with pytest.raises(UsageError, match="larger than the limit"):
        read_job_ad(p, 100)
    with pytest.raises(UsageError, match="not a regular file"):
        read_job_ad(str(tmp_path), 100)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="not a regular file"):
        read_job_ad(str(fifo), 100)  # must not block
    (tmp_path / "bin").write_bytes(b'VM_Command = "\xff"\n')
    with pytest.raises(UsageError, match="UTF-8"):
        read_job_ad(str(tmp_path / "bin"), 100)
    (tmp_path / "nul").write_bytes(b'VM_Command = "a\0b"\n')
    with pytest.raises(UsageError, match="NUL"):
        read_job_ad(str(tmp_path / "nul"), 100)


def test_job_ad_arg_limits(tmp_path):
    p = write(tmp_path, ".job.ad", 'VM_Command = "x"\nVM_Args = "a b c d"\n')
    with pytest.raises(UsageError, match="more than the limit"):
        read_job_ad(p, 1000, max_args=3)
    with pytest.raises(UsageError, match="more than the limit"):
        read_job_ad(p, 1000, max_arg_bytes=0)


ad_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                  min_size=1, max_size=60)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture],
          deadline=None)
@given(command=ad_text, args=st.lists(ad_text | st.just(""), max_size=6))
def test_job_ad_round_trip_new_syntax(tmp_path, command, args):
    ad = classad2.ClassAd()
    ad["VM_Command"] = command
    ad["VM_Args"] = quote_v2(args)
    ad["ClusterId"] = 7
    ad["ProcId"] = 1
    p = tmp_path / "new.ad"
    p.write_text(str(ad))
    info = read_job_ad(str(p), 1 << 20)
    assert info.command == command and list(info.args) == args and info.cluster == 7


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture],
          deadline=None)
@given(command=st.text(st.characters(blacklist_categories=("Cs", "Zl", "Zp"),
                                     blacklist_characters="\0\n\r\x0b\x0c\x1c\x1d\x1e\x85"),
                       min_size=1, max_size=60))
def test_job_ad_round_trip_old_syntax(tmp_path, command):
    """What the starter writes (old syntax, one attribute per line)."""
    ad = classad2.ClassAd()
    ad["VM_Command"] = command
    p = tmp_path / "old.ad"
    p.write_text(ad.printOld())
    assert read_job_ad(str(p), 1 << 20).command == command


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture],
          deadline=None)
@given(size=st.integers(min_value=1, max_value=4000))
def test_job_ad_oversized_refused(tmp_path, size):
    p = tmp_path / "big.ad"
    p.write_text('VM_Command = "' + "x" * size + '"\n')
    total = p.stat().st_size
    with pytest.raises(UsageError, match="larger than the limit"):
        read_job_ad(str(p), total - 1)
    assert read_job_ad(str(p), total).command == "x" * size


# --- machine ad ---------------------------------------------------------------------------


def test_machine_ad(tmp_path):
    p = write(tmp_path, ".machine.ad", "Cpus = 4\nMemory = 8192\nDisk = 1000\n")
    h = read_machine_ad(p, 1000)
    assert (h.cpus, h.memory_mib) == (4, 8192)


@pytest.mark.parametrize("text", ["Cpus = \"4\"\nMemory = 1.5\n", "Cpus = 0\nMemory = -1\n",
                                  "Cpus = true\n", "junk", "Cpus = Foo + 1\n", ""])
def test_machine_ad_garbage(tmp_path, text):
    p = write(tmp_path, ".machine.ad", text)
    h = read_machine_ad(p, 1000)
    assert (h.cpus, h.memory_mib) == (None, None)


def test_machine_ad_missing_or_big(tmp_path):
    assert read_machine_ad(str(tmp_path / "nope"), 100).cpus is None
    p = write(tmp_path, ".machine.ad", "Cpus = 4\n" + "#\n" * 100)
    assert read_machine_ad(p, 10).cpus is None


# --- build_request / JSON -----------------------------------------------------------------


def sandbox(tmp_path, ad='VM_Command = "/bin/job.sh"\nVM_Args = "a b"\nClusterId = 9\nProcId = 2\n',
            machine="Cpus = 2\nMemory = 4096\n", extra_env=b""):
    scratch = tmp_path / "dir_123"
    scratch.mkdir(exist_ok=True)
    if ad is not None:
        (scratch / ".job.ad").write_text(ad)
    if machine is not None:
        (scratch / ".machine.ad").write_text(machine)
    env = (b"_CONDOR_SCRATCH_DIR=" + str(scratch).encode() + b"/\0"
           b"_CONDOR_SLOT=slot1_3\0PATH=/usr/bin:/bin\0LD_PRELOAD=/x.so\0"
           b"_CONDOR_CHIRP_CONFIG=/x\0" + extra_env)
    return scratch, env


def test_build_request(tmp_path):
    scratch, env = sandbox(tmp_path)
    req = build_request(["-i", "busybox"], env, 2501, 2501, "racfjob", LIMITS)
    assert req.image == "busybox"
    assert req.command == "/bin/job.sh" and req.args == ("a", "b")
    assert req.workdir == str(scratch)  # normalized: trailing slash gone
    assert req.slot == "slot1_3" and (req.cluster, req.proc) == (9, 2)
    assert (req.machine_hint_cpus, req.machine_hint_memory_mib) == (2, 4096)
    names = dict(req.env)
    assert "LD_PRELOAD" not in names and "_CONDOR_CHIRP_CONFIG" not in names
    assert names["_CONDOR_SCRATCH_DIR"] == str(scratch) + "/"
    assert (req.uid, req.gid, req.user) == (2501, 2501, "racfjob")
    assert req.profile is None
    with_profile = build_request(["-i", "busybox", "-p", "medium"], env, 2501, 2501, "racfjob", LIMITS)
    assert (with_profile.image, with_profile.profile) == ("busybox", "medium")


def test_build_request_identity_not_from_ad(tmp_path):
    _, env = sandbox(tmp_path, ad='VM_Command = "x"\nOwner = "root"\nUid = 0\n',
                     extra_env=b"USER=root\0UID=0\0")
    req = build_request(["-i", "busybox"], env, 2501, 2502, "racfjob", LIMITS)
    assert (req.uid, req.gid, req.user) == (2501, 2502, "racfjob")


@pytest.mark.parametrize("uid", [0, 1, 999, 65534, 4294967295])
def test_build_request_refuses_system_uids(tmp_path, uid):
    _, env = sandbox(tmp_path)
    with pytest.raises((RefusedError, UsageError)) as e:
        build_request(["-i", "busybox"], env, uid, 2501, "racfjob", LIMITS)
    assert e.value.exit_status in (64, 77)


def test_build_request_refuses_gid0(tmp_path):
    _, env = sandbox(tmp_path)
    with pytest.raises(RefusedError):
        build_request(["-i", "busybox"], env, 2501, 0, "racfjob", LIMITS)


def test_build_request_missing_pieces(tmp_path):
    with pytest.raises(UsageError, match="_CONDOR_SCRATCH_DIR is not set"):
        build_request(["-i", "busybox"], b"PATH=/bin\0", 2501, 2501, "u", LIMITS)
    with pytest.raises(UsageError, match="absolute"):
        build_request(["-i", "busybox"], b"_CONDOR_SCRATCH_DIR=rel\0", 2501, 2501, "u", LIMITS)
    _, env = sandbox(tmp_path, ad=None, machine=None)
    with pytest.raises(UsageError, match=r"does not exist: put \+VM_Command"):
        build_request(["-i", "busybox"], env, 2501, 2501, "u", LIMITS)
    _, env = sandbox(tmp_path, ad="ClusterId = 1\n", machine=None)
    with pytest.raises(UsageError, match=r"no VM_Command: put \+VM_Command"):
        build_request(["-i", "busybox"], env, 2501, 2501, "u", LIMITS)


def test_build_request_job_ad_from_env(tmp_path):
    other = tmp_path / "elsewhere.ad"
    other.write_text('VM_Command = "/other"\n')
    _, env = sandbox(tmp_path, machine=None, extra_env=b"_CONDOR_JOB_AD=" + str(other).encode() + b"\0")
    req = build_request(["-i", "busybox"], env, 2501, 2501, "u", LIMITS)
    assert req.command == "/other" and req.machine_hint_cpus is None


def test_build_request_env_limit(tmp_path):
    _, env = sandbox(tmp_path)
    with pytest.raises(UsageError, match="more than the limit"):
        build_request(["-i", "busybox"], env + b"BIG=" + b"x" * 5000 + b"\0", 2501, 2501, "u",
                      dataclasses.replace(LIMITS, max_env_bytes=4000))


def test_json_round_trip(tmp_path):
    # new syntax: the only one that can carry a newline inside a string
    _, env = sandbox(tmp_path, ad='[ VM_Command = "a\\"b"; VM_Args = "\\"\'new\\nline\' \'\'\\"" ]')
    req = build_request(["-i", "busybox"], env, 2501, 2501, "racfjob", LIMITS)
    assert req.args == ("new\nline", "")
    text = req.to_json()
    assert JobRequest.from_json(text, LIMITS) == req
    assert JobRequest.from_json(text.encode(), LIMITS) == req
    assert json.loads(build_request_json(["-i", "busybox"], env.decode("latin-1"), 2501, 2501,
                                         "racfjob", LIMITS)) == json.loads(text)


def base_request(**kw):
    fields = dict(image="busybox", command="/bin/sh", args=("-c", "echo hi"),
                  env=(("A", "1"),), user="racfjob", uid=2501, gid=2501,
                  workdir="/var/lib/condor/execute/dir_1", slot="slot1", cluster=1, proc=0)
    fields.update(kw)
    return fields


@pytest.mark.parametrize(
    "change, exc",
    [
        ({"image": "../x"}, UsageError),
        ({"command": ""}, UsageError),
        ({"command": "a\0b"}, UsageError),
        ({"args": ["x"]}, UsageError),
        ({"args": ("a\0",)}, UsageError),
        ({"env": (("1X", "v"),)}, UsageError),
        ({"env": (("A=B", "v"),)}, UsageError),
        ({"env": (("", "v"),)}, UsageError),
        ({"env": (("A", "1"), ("A", "2"))}, UsageError),
        ({"env": (("A", "\ud800"),)}, UsageError),
        ({"user": "ro/ot"}, UsageError),
        ({"user": "a\nb"}, UsageError),
        ({"uid": 0}, RefusedError),
        ({"uid": -1}, UsageError),
        ({"uid": 65534}, RefusedError),
        ({"uid": 4294967295}, RefusedError),
        ({"uid": True}, UsageError),
        ({"uid": "2501"}, UsageError),
        ({"gid": 0}, RefusedError),
        ({"workdir": "relative"}, UsageError),
        ({"workdir": "/a/../b"}, UsageError),
        ({"workdir": "/a/\nb"}, UsageError),
        ({"workdir": "//a"}, UsageError),
        ({"slot": "slot1; rm"}, UsageError),
        ({"slot": ""}, UsageError),
        ({"cluster": -1}, UsageError),
        ({"proc": 1.5}, UsageError),
        ({"machine_hint_cpus": 0}, UsageError),
        ({"machine_hint_memory_mib": "4096"}, UsageError),
    ],
)
def test_from_json_revalidates(change, exc):
    good = JobRequest(**base_request())
    assert JobRequest.from_json(good.to_json(), LIMITS) == good
    data = json.loads(good.to_json())
    for k, v in change.items():
        data[k] = [list(e) for e in v] if k == "env" else (list(v) if k == "args" and isinstance(v, tuple) else v)
    if change.get("args") == ["x"]:
        # a list is the JSON form; give the dataclass a non-tuple directly instead
        with pytest.raises(UsageError):
            JobRequest(**base_request(args=["x"])).validate(LIMITS)
        return
    try:
        text = json.dumps(data)
    except (UnicodeEncodeError, ValueError):
        text = None
    with pytest.raises(exc):
        if text is not None:
            JobRequest.from_json(text, LIMITS)
        JobRequest(**base_request(**change)).validate(LIMITS)


@pytest.mark.parametrize(
    "text",
    ["", "nonsense", "[]", "{}", '{"image": "x"}', "[" * 100000,
     json.dumps(dict(base_request(), extra=1)), json.dumps(dict(base_request(), env=[["A"]]))],
)
def test_from_json_garbage(text):
    with pytest.raises(UsageError):
        JobRequest.from_json(text, LIMITS)


def test_limits_on_args():
    req = JobRequest(**base_request(args=tuple(["x"] * 10)))
    with pytest.raises(UsageError, match="more than the limit"):
        req.validate(dataclasses.replace(LIMITS, max_args=5))
    req = JobRequest(**base_request(args=("x" * 100,)))
    with pytest.raises(UsageError, match="more than the limit"):
        req.validate(dataclasses.replace(LIMITS, max_arg_bytes=50))


def test_hostile_args_are_data():
    args = ("'; rm -rf /", "$(id)", "a\nb", "`x`", "\\")
    req = JobRequest(**base_request(args=args)).validate(LIMITS)
    assert JobRequest.from_json(req.to_json(), LIMITS).args == args
