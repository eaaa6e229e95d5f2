"""Pieces of the HTCondor-facing tools that need no root: options, the plugin's protocol
(racf_vm.condor.transfer), the hooks' refusal ad, the staged-file names, the config."""

import classad2
import pytest

from racf_vm.condor import adio, hooks, staging, tools, transfer
from racf_vm.config import parse_config
from racf_vm.core.errors import ConfigError, TemporaryError, UsageError


def test_config_option():
    assert tools.split_config_option(["--config", "/x.toml", "-classad"]) == ("/x.toml", ["-classad"])
    assert tools.split_config_option(["--config=/y.toml"]) == ("/y.toml", [])
    assert tools.split_config_option(["exit"]) == (tools.DEFAULT_CONFIG, ["exit"])
    with pytest.raises(UsageError):
        tools.split_config_option(["--config"])


def test_an_access_point_without_config_gets_the_defaults(tmp_path):
    cfg = tools.load_config_if_present(str(tmp_path / "absent.toml"))
    assert cfg.condor.wrapper == "/usr/local/racf/vm"


def test_config_sections():
    cfg = parse_config(b'[vm_universe]\nconsole_log = true\n[condor]\nwrapper = "/opt/racf/vm"\n', "t")
    assert cfg.vm_universe.console_log is True and cfg.condor.wrapper == "/opt/racf/vm"
    defaults = parse_config(b"", "t")
    assert defaults.vm_universe.console_log is False
    for bad in (b"[condor]\nwrapper = \"relative/vm\"\n", b"[condor]\nwrapr = \"/x\"\n",
                b"[vm_universe]\nconsole_log = \"yes\"\n"):
        with pytest.raises(ConfigError):
            parse_config(bad, "t")


# -- the transfer plugin ----------------------------------------------------------------

def test_the_query_ad():
    ad = adio.parse_old_ad(adio.format_ad(transfer.plugin_ad()), "query")
    assert ad["MultipleFileSupport"] is True and ad["ProtocolVersion"] == 2
    assert ad["PluginType"] == "FileTransfer" and ad["SupportedMethods"] == "racfimg"
    assert isinstance(ad["PluginVersion"], str)


@pytest.mark.parametrize("url, image", [("racfimg://busybox", "busybox"), ("racfimg://sl_53/", "sl_53")])
def test_urls(url, image):
    assert transfer.image_of_url(url) == image


@pytest.mark.parametrize("url", [
    "racfimg://../etc", "racfimg://busybox/x.qcow2", "racfimg://u@busybox", "racfimg://busybox:1",
    "racfimg://busybox?x=1", "http://busybox", "racfimg:busybox", "racfimg://", "racfimg://Bad",
    "file:///etc/shadow", 3,
])
def test_bad_urls(url):
    with pytest.raises(UsageError):
        transfer.image_of_url(url)


def test_protocol2_arguments():
    assert transfer.parse_protocol2(["-infile", "i", "-outfile", "o"]) == ("i", "o", False)
    assert transfer.parse_protocol2(["-outfile", "o", "-upload", "-infile", "i"]) == ("i", "o", True)
    for bad in (["-infile", "i"], ["-infile", "i", "-outfile"], ["-infile", "i", "-infile", "j"],
                ["-infile", "i", "-outfile", "o", "x"]):
        with pytest.raises(UsageError):
            transfer.parse_protocol2(bad)


def test_result_ads_are_new_syntax():
    ok = transfer.Result("racfimg://busybox", "/s/busybox", size=196616)
    bad = transfer.Result("racfimg://nope", "/s/a \"b\"", error="racf-vm: unknown image 'nope';\n available: x")
    text = (transfer.new_syntax(ok.ad()) + transfer.new_syntax(bad.ad())).decode()
    first, second = classad2.parseAds(text, classad2.ParserType.New)
    assert first["TransferSuccess"] is True and first["TransferTotalBytes"] == 196616
    assert "TransferError" not in first and first["TransferURL"] == "racfimg://busybox"
    assert second["TransferSuccess"] is False and second["TransferFileName"] == '/s/a "b"'
    assert second["TransferError"] == "racf-vm: unknown image 'nope'; available: x"


def test_the_output_file_is_never_truncated(tmp_path):
    path = tmp_path / "out"
    path.write_bytes(b" " * 4096)  # HTCondor pre-allocates it
    out = transfer.OutFile(str(path))
    out.write({"TransferFileName": "/s/a", "TransferURL": "racfimg://a", "TransferSuccess": True})
    out.close()
    data = path.read_bytes()
    assert len(data) == 4096
    (ad,) = classad2.parseAds(data.decode(), classad2.ParserType.New)
    assert ad["TransferFileName"] == "/s/a"


# -- hooks --------------------------------------------------------------------------------

@pytest.mark.parametrize("exc, status, code", [
    (UsageError("unknown image 'x'; available: busybox"), 64, 64),  # held: the job's mistake
    (TemporaryError("image 'x' is not in this node's cache"), 1, 375),  # back to idle
])
def test_a_hook_refusal_is_an_ad(capsys, exc, status, code):
    assert hooks._hook_refusal(exc) == status
    out, err = capsys.readouterr()
    ad = adio.parse_old_ad(out, "hook output")
    assert ad["HookStatusCode"] == code
    assert ad["HookStatusMessage"] == "racf-vm: " + exc.message
    assert err == ad["HookStatusMessage"] + "\n"


def test_staged_names(tmp_path):
    assert staging.staged_name("busybox") == "racf-busybox.qcow2"
    assert staging.STAGED_RE.fullmatch(staging.staged_name("sl_53.x-1"))
    (tmp_path / "racf-busybox.qcow2").write_bytes(b"x")
    (tmp_path / "keep").write_bytes(b"x")
    for name in ("keep", "../keep", "racf-../x.qcow2", None, 3):
        assert staging.remove_staged(str(tmp_path), name) is False
    assert staging.remove_staged(str(tmp_path), "racf-busybox.qcow2") is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]
