"""racf_vm.condor.storage and the request: --scratch, --data, --export-scratch as data."""

import pytest

from racf_vm.condor import storage
from racf_vm.condor.request import JobRequest
from racf_vm.config import LimitsConfig
from racf_vm.core.errors import UsageError

W = "/var/lib/condor/execute/dir_7"
GIB = 1 << 30


@pytest.mark.parametrize("text, size", [("10G", 10 * GIB), ("512M", 512 << 20), ("1k", 1024),
                                        ("4096", 4096), ("1000", 1024), ("2GiB", 2 * GIB)])
def test_sizes(text, size):
    assert storage.parse_size(text, "--scratch", 100 * GIB) == size


@pytest.mark.parametrize("text, words", [("0", "more than zero"), ("-1G", "not a size"), ("ten", "not a size"),
                                         ("", "not a size"), ("1.5G", "not a size"),
                                         ("200G", "site limit of 102400 MiB"), ("9" * 20, "not a size")])
def test_bad_sizes_say_the_limit(text, words):
    with pytest.raises(UsageError, match=words):
        storage.parse_size(text, "--scratch", 100 * GIB)


@pytest.mark.parametrize("path, words", [
    ("scratch", "must be absolute"), ("/", "not a plain"), ("/data/../etc", "not a plain"),
    ("//data", "not a plain"), ("/etc", "hide part of the system"), ("/usr/local/x", "hide part of the system"),
    ("/etc/sudoers.d", "hide part of the system"), ("/tmp", "hide part of the system"),
    ("/var/lib/condor", "hide part of the system"), ("/racf/job", "hide part of the system"),
    ("/data dir", "may use letters"), ("/a\nb", "must be absolute"),
])
def test_bad_mount_paths(path, words):
    with pytest.raises(UsageError, match=words):
        storage.check_mount_path(path, "--scratch", W)


def test_mount_paths_never_hide_the_working_directory():
    for path in ("/scratch", "/mnt/data", "/data/in/put"):
        assert storage.check_mount_path(path, "--data", W) == path
    workdir = "/scratch/job"
    for path in ("/scratch", "/scratch/job", "/scratch/job/x"):
        with pytest.raises(UsageError, match="working directory"):
            storage.check_mount_path(path, "--data", workdir)


def test_data_names_modes_and_formats():
    assert storage.parse_data("in.qcow2", W) == ("in.qcow2", "/data", "ro", "qcow2")
    assert storage.parse_data("in.img:/mnt/in:rw", W) == ("in.img", "/mnt/in", "rw", "raw")
    assert storage.parse_data("blob:/d:ro", W, "qcow2") == ("blob", "/d", "ro", "qcow2")
    for value, words in (("blob", "name the format"), ("../x.img", "plain file name"), ("d/x.img", "plain file name"),
                         ("x.img:/d:wo", "ro or rw"), ("x.img:/etc", "hide part")):
        with pytest.raises(UsageError, match=words):
            storage.parse_data(value, W)


def _request(**over):
    fields = dict(image="busybox", command="/bin/true", args=(), env=(), user="racfjob", uid=2501, gid=2501,
                  workdir=W, slot="slot1", cluster=1, proc=0)
    fields.update(over)
    return JobRequest(**fields)


def test_the_request_re_checks_storage_and_its_json_round_trip():
    req = _request(scratch_bytes=GIB, scratch_path="/scratch", data_file="in.qcow2", data_path="/data",
                   data_mode="rw", data_format="qcow2", data_bytes=GIB, export_scratch=True).validate(LimitsConfig())
    assert JobRequest.from_json(req.to_json(), LimitsConfig()) == req
    for over, words in (
        (dict(scratch_bytes=GIB, scratch_path="/etc"), "hide part"),
        (dict(scratch_bytes=200 * GIB, scratch_path="/scratch"), "scratch size"),
        (dict(export_scratch=True), "needs --scratch"),
        (dict(scratch_bytes=GIB, scratch_path="/d", data_file="x.img", data_path="/d/x", data_mode="ro",
              data_format="raw", data_bytes=1024), "one on or in the other"),
    ):
        with pytest.raises(UsageError, match=words):
            _request(**over).validate(LimitsConfig())
