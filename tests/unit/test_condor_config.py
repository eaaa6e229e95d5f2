"""`racf-vm condor-config`: valid HTCondor configuration, checked as data, naming only paths
that `make install` installs (read from the Makefile's dry run, not by installing)."""

import re
import tomllib
from pathlib import Path

import classad2
import pytest

from racf_vm.condor import condorconfig
from racf_vm.condor import integration_paths as ip
from racf_vm.condor.condorconfig import NodeOptions
from racf_vm.config import parse_config
from racf_vm.core.errors import ConfigError
from tests.support import condorconfig as cc
from tests.support.prereq import require_file

REPO = Path(__file__).resolve().parents[2]
DEFAULT = parse_config(b"", "test.toml")


def node(cfg=DEFAULT, config_path=ip.DEFAULT_CONFIG, **options):
    text = condorconfig.render(condorconfig.execute_node_config(cfg, config_path, NodeOptions(**options)),
                               "header line one\nline two")
    return text, cc.expand(cc.parse(text))


def access_point(cfg=DEFAULT):
    text = condorconfig.render(condorconfig.access_point_config(cfg), "header")
    return text, cc.expand(cc.parse(text))


def words(value: str) -> list[str]:
    return [w for w in re.split(r"[\s,]+", value) if w]


def test_the_execute_node_config_parses_and_each_part_is_there():
    text, conf = node()
    assert text.startswith("# header line one\n# line two\n")
    job = f"STARTD_CRON_{ip.CRON_JOB_NAME}"
    assert words(conf["STARTD_CRON_JOBLIST"]) == [ip.CRON_JOB_NAME]
    assert conf[f"{job}_EXECUTABLE"] == "/usr/local/libexec/racf-vm/racf-vm-advertise"
    assert conf[f"{job}_ARGS"] == f"--config {ip.DEFAULT_CONFIG}"
    assert (conf[f"{job}_MODE"], conf[f"{job}_PERIOD"], conf[f"{job}_CWD"]) == ("Periodic", "300s", "/")
    assert conf["VM_TYPE"] == "kvm"
    assert conf["LIBVIRT_XML_SCRIPT"] == "/usr/local/libexec/racf-vm/racf-vm-libvirt-xml"
    assert conf["LIBVIRT_XML_SCRIPT_ARGS"] == f"--config {ip.DEFAULT_CONFIG}"
    assert conf["RACFVM_HOOK_PREPARE_JOB"] == "/usr/local/libexec/racf-vm/racf-vm-hook-prepare"
    assert conf["RACFVM_HOOK_JOB_EXIT"] == "/usr/local/libexec/racf-vm/racf-vm-hook-exit"
    assert "STARTER_DEFAULT_JOB_HOOK_KEYWORD" not in conf  # jobs opt in with +HookKeyword
    assert conf["ENABLE_URL_TRANSFERS"] == "True"
    # the site's plugins are kept, ours added
    assert words(conf["FILETRANSFER_PLUGINS"]) == words(cc.HTCONDOR_DEFAULTS["FILETRANSFER_PLUGINS"]) + [
        "/usr/local/libexec/racf-vm/racf-vm-transfer"]
    assert "RacfVMHookKeyword" in words(conf["STARTD_ATTRS"])
    assert classad2.ExprTree(conf["RACFVMHOOKKEYWORD"]).eval() == "RACFVM"
    assert not {"NUM_CPUS", "MEMORY", "SLOT_TYPE_1_PARTITIONABLE"} & set(conf)


def test_the_site_config_drives_keyword_period_and_paths():
    cfg = parse_config(b'[condor]\nhook_keyword = "VMHOOK"\nadvertise_period = 60\n'
                       b'libexec_dir = "/opt/site/libexec"\n', "test.toml")
    _, conf = node(cfg, "/etc/site/racf.toml")
    assert conf["VMHOOK_HOOK_PREPARE_JOB"] == "/opt/site/libexec/racf-vm-hook-prepare"
    assert conf["STARTD_CRON_RACFVM_PERIOD"] == "60s"
    assert conf["STARTD_CRON_RACFVM_ARGS"] == "--config /etc/site/racf.toml"
    assert classad2.ExprTree(conf["RACFVMHOOKKEYWORD"]).eval() == "VMHOOK"
    _, with_default = node(cfg, default_hook=True)
    assert with_default["STARTER_DEFAULT_JOB_HOOK_KEYWORD"] == "VMHOOK"
    assert condorconfig.tool_paths(condorconfig.execute_node_config(cfg, ip.DEFAULT_CONFIG), cfg.condor.libexec_dir) == [
        f"/opt/site/libexec/{t}" for t in (ip.ADVERTISE, ip.LIBVIRT_XML, ip.HOOK_PREPARE, ip.HOOK_EXIT, ip.TRANSFER)]


def test_partitionable_slot_with_overprovisioning():
    _, conf = node(partitionable_slot=True, overprovision_cpus=4, overprovision_memory=2)
    assert conf["SLOT_TYPE_1_PARTITIONABLE"] == "True" and conf["NUM_SLOTS_TYPE_1"] == "1"
    assert conf["SLOT_TYPE_1"] == "100%"
    # the values are ClassAd expressions of constants once expanded
    assert classad2.ExprTree(conf["NUM_CPUS"]).eval() == 8
    assert classad2.ExprTree(conf["MEMORY"]).eval() == 48000
    assert conf["VM_MEMORY"] == conf["MEMORY"]
    _, plain = node(partitionable_slot=True)
    assert "NUM_CPUS" not in plain and "MEMORY" not in plain and plain["VM_MEMORY"] == "24000"


@pytest.mark.parametrize("options, needle", [
    (dict(overprovision_cpus=4), "add --partitionable-slot"),
    (dict(partitionable_slot=True, overprovision_cpus=0), "must be 1..64"),
    (dict(partitionable_slot=True, overprovision_memory=65), "must be 1..64"),
])
def test_bad_options_are_refused(options, needle):
    with pytest.raises(ConfigError, match=needle):
        condorconfig.execute_node_config(DEFAULT, ip.DEFAULT_CONFIG, NodeOptions(**options))


@pytest.mark.parametrize("path", ["/etc/racf vm.toml", "/etc/$(X).toml", "/etc/a#b", "/etc/a,b",
                                  "/etc/../x"])
def test_a_path_htcondor_would_split_or_expand_is_refused(path):
    with pytest.raises(ConfigError, match="cannot be written into HTCondor configuration"):
        condorconfig.execute_node_config(DEFAULT, path)


def test_the_access_point_route_and_hooks():
    text, conf = access_point()
    assert "JOB_ROUTER" in words(conf["DAEMON_LIST"])
    assert conf["JOB_ROUTER_HOOK_KEYWORD"] == "RACFVM"
    assert conf["RACFVM_HOOK_TRANSLATE_JOB"] == "/usr/local/libexec/racf-vm/racf-vm-route-translate"
    assert conf["RACFVM_HOOK_JOB_FINALIZE"] == "/usr/local/libexec/racf-vm/racf-vm-route-finalize"
    assert words(conf["JOB_ROUTER_ROUTE_NAMES"]) == [ip.ROUTE_NAME]
    route = conf[f"JOB_ROUTER_ROUTE_{ip.ROUTE_NAME}".upper()].split("\n")
    commands = dict(line.split(None, 1) for line in route)
    assert set(commands) == {"UNIVERSE", "REQUIREMENTS"} and commands["UNIVERSE"] == "VANILLA"
    requirements = classad2.ExprTree(commands["REQUIREMENTS"])

    def routed(ad_text):
        return requirements.eval(classad2.parseOne(ad_text)) is True

    assert routed('VM_Image = "busybox"\nCmd = "/bin/job"')
    assert not routed('Cmd = "/bin/job"')
    assert not routed('VM_Image = "busybox"\nRoutedFromJobId = "12.0"')  # the routed copy


def test_every_path_it_names_is_installed_by_the_makefile():
    require_file("/usr/bin/make", "make")
    installed, links = cc.installed_paths(REPO)
    scripts = cc.venv_scripts(REPO)
    texts = [node(partitionable_slot=True, overprovision_cpus=2)[0], access_point()[0]]
    named = {w for text in texts for _, value in cc.parse(text) for w in words(value)
             if w.startswith("/")}
    assert named, "no paths found"
    assert ip.DEFAULT_CONFIG in named
    missing = named - installed - {"/"}  # "/": STARTD_CRON's working directory
    assert missing == set(), f"printed but not installed by make install: {sorted(missing)}"
    for path in named & set(links):  # a link must point at a console script pip installs
        assert links[path] in scripts, f"{path} -> {links[path]} is not a pyproject script"


def test_tools_agree_between_integration_paths_pyproject_and_the_makefile():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {k: v for k, v in scripts.items() if k != "racf-vm"} == ip.ENTRY_POINTS
    makefile = (REPO / "Makefile").read_text()
    listed = re.search(r"^INTEGRATION_TOOLS :=((?:.*\\\n)*.*)$", makefile, re.M).group(1)
    assert set(listed.replace("\\", " ").split()) == set(ip.ENTRY_POINTS)
    require_file("/usr/bin/make", "make")
    _, links = cc.installed_paths(REPO)
    for tool in ip.ENTRY_POINTS:
        assert links[ip.tool_path(ip.DEFAULT_LIBEXEC_DIR, tool)] == f"/opt/racf-vm/venv/bin/{tool}"
    assert parse_config(b"", "x").condor.libexec_dir == ip.DEFAULT_LIBEXEC_DIR


def test_the_checker_itself_refuses_bad_syntax():
    for bad in ("NAME value\n", "A = $(UNDEFINED_THING)\n", "A @=t\nx\n", "BAD-NAME = 1\n",
                "A = $INT(X)\n", "if defined X\n"):
        with pytest.raises(cc.ConfigSyntaxError):
            cc.expand(cc.parse(bad))
    assert cc.expand(cc.parse("A = x \\\n# c\n  y\nB = $(A) $(C:dflt)\nA = $(A)z\n")) == {
        "A": "x yz", "B": "x yz dflt"}


def test_the_admin_guide_shows_exactly_what_is_printed():
    text = (REPO / "docs" / "admin-guide.md").read_text()
    blocks = re.findall(r"```\n(.*?)```", text, re.S)
    [node_block] = [b for b in blocks if "STARTD_CRON_JOBLIST" in b]
    [ap_block] = [b for b in blocks if "JOB_ROUTER_ROUTE_NAMES" in b]
    assert cc.parse(node_block) == cc.parse(node(partitionable_slot=True, overprovision_cpus=4)[0])
    assert cc.parse(ap_block) == cc.parse(access_point()[0])
