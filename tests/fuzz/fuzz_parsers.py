"""Fuzz the parsers of untrusted input: only RacfError subclasses may ever escape.

Run: ``FUZZ_EXAMPLES=20000 python -m pytest tests/fuzz`` (``make fuzz``) or
``python tests/fuzz/fuzz_parsers.py``. FUZZ_EXAMPLES defaults to a small number so the
file can sit in a normal test run.
"""

import atexit
import os
import shutil
import sys
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from racf_vm.condor.ads import parse_job_ad_text, read_job_ad, read_machine_ad
from racf_vm.condor.arguments import parse_args
from racf_vm.condor.environment import parse_env_blob
from racf_vm.condor.request import JobRequest
from racf_vm.condor.wrapperargs import parse_wrapper_argv
from racf_vm.config import LimitsConfig, parse_config
from racf_vm.core.errors import RacfError
from racf_vm.images.catalog import parse_image_entry

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
LIMITS = LimitsConfig()
_TMP = tempfile.mkdtemp(prefix="racf-fuzz-")
atexit.register(shutil.rmtree, _TMP, True)


def only_racf_errors(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except RacfError:
        pass


# Fragments that make random text look like a ClassAd, a V2 argument string or TOML.
AD_TOKENS = st.sampled_from([
    "VM_Command", "VM_Args", "ClusterId", "ProcId", "Cpus", "Memory", " = ", "=", "\"", "'",
    "\\", "\\\"", "\n", "[", "]", ";", "{", "}", "(", ")", "1", "-1", "99999999999999999999",
    "true", "undefined", "error", "strcat(", ",", "1.5e308", "\"\"", "''", " ", "\t", "\0",
    "\u00e9", "\ud800", "#", "//", "/*", "*/", "MY.", "TARGET.", "ifThenElse(",
])
ad_like = st.lists(AD_TOKENS | st.text(max_size=5), max_size=40).map("".join)
text_any = st.text() | ad_like


@FUZZ
@given(text_any)
def test_fuzz_parse_args(value):
    only_racf_errors(parse_args, value)


@FUZZ
@given(st.binary(max_size=2000) | ad_like.map(lambda s: s.encode("utf-8", "surrogatepass")),
       st.integers(min_value=0, max_value=4000))
def test_fuzz_env_blob(blob, cap):
    only_racf_errors(parse_env_blob, blob, cap)


@FUZZ
@given(st.binary(max_size=3000) | ad_like.map(lambda s: s.encode("utf-8", "surrogatepass")),
       st.integers(min_value=0, max_value=4000))
def test_fuzz_read_job_ad(data, cap):
    path = os.path.join(_TMP, "job.ad")
    with open(path, "wb") as f:
        f.write(data)
    only_racf_errors(read_job_ad, path, cap)
    only_racf_errors(read_job_ad, path, cap, max_arg_bytes=8, max_args=2)
    hints = read_machine_ad(path, cap)  # never raises at all
    assert hints.cpus is None or hints.cpus >= 1


@FUZZ
@given(ad_like)
def test_fuzz_job_ad_text(text):
    only_racf_errors(parse_job_ad_text, text)


@FUZZ
@given(st.lists(st.sampled_from(["-i", "--image", "-ix", "--image=y", "img", ""]) | st.text(),
                max_size=5))
def test_fuzz_wrapper_argv(argv):
    only_racf_errors(parse_wrapper_argv, argv)


@FUZZ
@given(st.text() | st.binary().map(lambda b: b.decode("latin-1")))
def test_fuzz_from_json(text):
    only_racf_errors(JobRequest.from_json, text, LIMITS)


TOML_TOKENS = st.sampled_from([
    "[paths]", "[sizing]", "[boot]", "[context]", "\n", " = ", "\"", "'", "name", "trust",
    "path", "format", "sha256", "method", "kernel", "min_cpus", "1", "-1", "1e400", "nan",
    "inf", "true", "\"/x\"", "\"x\"", "[", "]", "{", "}", ".", "\"\"\"", "\\u0000", "#",
])


@FUZZ
@given(st.binary(max_size=500) | st.lists(TOML_TOKENS, max_size=30).map(lambda t: "".join(t).encode()))
def test_fuzz_toml(data):
    only_racf_errors(parse_config, data, "fuzz.toml")
    only_racf_errors(parse_image_entry, data, "/x/name.toml")


# The signed checksum list comes from the network: parsing it and checking it as a node
# does must only ever refuse (BadSignatureError / BadListError), never crash or accept.
LIST_TOKENS = st.sampled_from([
    "racf-vm signed list 1\n", "serial ", "0", "18446744073709551616", "\n", "signature ",
    "SHA256:" + "A" * 43, " ", "A" * 86 + "==", "\n\n", "a" * 64 + "  x.raw.gz\n", "\0",
    "\u00e9", "*", "..", "/",
])


@FUZZ
@given(st.binary(max_size=800) | st.lists(LIST_TOKENS, max_size=20).map(lambda t: "".join(t).encode("utf-8", "surrogatepass")))
def test_fuzz_signed_list(data):
    from racf_vm.config.sshkeys import PublicKey
    from racf_vm.images.checksums import parse_list
    from racf_vm.images.signedlist import recheck_stored, verify

    key = PublicKey(raw=bytes(32), fingerprint="SHA256:" + "A" * 43)
    for check in (lambda: verify(data, "SHA256SUMS", [key], "fuzz"),
                  lambda: recheck_stored(data, key.fingerprint, [key], "fuzz")):
        try:
            got = check()
        except RacfError:
            continue
        assert check is not None and got.signer == key.fingerprint
        only_racf_errors(parse_list, got.body, "fuzz")
    only_racf_errors(parse_list, data, "fuzz")


if __name__ == "__main__":
    import pytest

    sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", __file__]))
