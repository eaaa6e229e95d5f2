"""The HTCondor configuration for this install, as data: `racf-vm condor-config` prints it.

``execute_node_config`` gives the file an execute node drops into ``LOCAL_CONFIG_DIR``:
STARTD_CRON advertising (racf-vm-advertise), the VM universe with our LIBVIRT_XML_SCRIPT,
the job hooks (PREPARE_JOB, JOB_EXIT) under ``[condor] hook_keyword``, the file-transfer
plugin, and, as options, seed 000's single partitionable slot with over-provisioning.
``access_point_config`` gives the JobRouter route and its hooks. Both are tuples of
``Section``; ``render`` turns them into HTCondor configuration syntax (``NAME = value``,
``#`` comments, ``NAME @=tag`` ... ``@tag`` for multi-line values). Every path comes from
racf_vm.condor.integration_paths and the site config, never from a template.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from racf_vm.condor import integration_paths as ip
from racf_vm.core.errors import ConfigError, InternalError

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
# what may appear in a path HTCondor splits lists on (spaces, commas) or expands ($, #)
SAFE_PATH_RE = re.compile(r"/[A-Za-z0-9_./+@-]*")
MAX_OVERPROVISION = 64
MULTILINE_TAG = "racfvm_end"
# The route: a vanilla job that names an image and is not itself a routed copy.
ROUTE_REQUIREMENTS = f"({ip.JOB_IMAGE_ATTR} isnt undefined) && (RoutedFromJobId is undefined)"


@dataclass(frozen=True)
class Setting:
    name: str
    value: str  # one line, or several (then printed as a multi-line value)
    comment: str = ""  # printed as "# ..." lines just above


@dataclass(frozen=True)
class Section:
    title: str
    settings: tuple[Setting, ...]


@dataclass(frozen=True)
class NodeOptions:
    """The command's options for the execute node."""

    partitionable_slot: bool = False
    overprovision_cpus: int = 1  # NUM_CPUS = DETECTED_CPUS x this (with the slot only)
    overprovision_memory: int = 1  # MEMORY = DETECTED_MEMORY x this (with the slot only)
    default_hook: bool = False  # jobs without a HookKeyword of their own get ours too


def _path(path: str) -> str:
    if not SAFE_PATH_RE.fullmatch(path) or "/../" in path + "/":
        raise ConfigError(f"the path {path!r} cannot be written into HTCondor configuration "
                          "(use letters, digits and _ . / + @ - only)")
    return path


def _classad_string(value: str) -> str:
    import classad2  # only when printing: the quoting is classad2's, not ours

    return classad2.quote(value)


def _tool(cfg, tool: str) -> str:
    return _path(ip.tool_path(cfg.condor.libexec_dir, tool))


def _advertise(cfg, config_path: str) -> Section:
    job = f"STARTD_CRON_{ip.CRON_JOB_NAME}"
    return Section("Advertise what this node can run (racf-vm-advertise runs as the condor user)", (
        Setting("STARTD_CRON_JOBLIST", f"$(STARTD_CRON_JOBLIST) {ip.CRON_JOB_NAME}"),
        Setting(f"{job}_EXECUTABLE", _tool(cfg, ip.ADVERTISE)),
        Setting(f"{job}_ARGS", f"--config {_path(config_path)}"),
        Setting(f"{job}_MODE", "Periodic"),
        Setting(f"{job}_PERIOD", f"{cfg.condor.advertise_period}s"),
        Setting(f"{job}_KILL", "True", "a run still going when the next is due is stopped"),
        Setting(f"{job}_RECONFIG_RERUN", "True"),
        Setting(f"{job}_CWD", "/"),
    ))


def _vm_universe(cfg, config_path: str, options: NodeOptions) -> Section:
    memory = "$(MEMORY)" if options.partitionable_slot and options.overprovision_memory > 1 \
        else "$(DETECTED_MEMORY)"
    return Section("VM universe: racf-vm writes the domain XML (catalog images only, sized to the slot)", (
        Setting("VM_TYPE", "kvm"),
        Setting("VM_MEMORY", memory),
        Setting("VM_NETWORKING", "True",
                "the image's trust decides the real network (untrusted: racf-vm's NAT network)"),
        Setting("VM_NETWORKING_TYPE", "nat"),
        Setting("VM_NETWORKING_DEFAULT_TYPE", "nat"),
        Setting("LIBVIRT_XML_SCRIPT", _tool(cfg, ip.LIBVIRT_XML)),
        Setting("LIBVIRT_XML_SCRIPT_ARGS", f"--config {_path(config_path)}"),
    ))


def _job_hooks(cfg, options: NodeOptions) -> Section:
    k = cfg.condor.hook_keyword
    settings = [
        Setting(f"{k}_HOOK_PREPARE_JOB", _tool(cfg, ip.HOOK_PREPARE)),
        Setting(f"{k}_HOOK_JOB_EXIT", _tool(cfg, ip.HOOK_EXIT)),
        Setting(f"{k}_HOOK_JOB_EXIT_TIMEOUT", "30",
                "seconds the starter waits for it (it only removes a staged overlay)"),
    ]
    if options.default_hook:
        settings.append(Setting(
            "STARTER_DEFAULT_JOB_HOOK_KEYWORD", k,
            f"every job without a HookKeyword of its own runs {k}'s hooks (they pass jobs "
            "not meant for racf-vm through unchanged)"))
    settings += [
        Setting("RacfVMHookKeyword", _classad_string(k), "advertised, as the manual suggests for hooks"),
        Setting("STARTD_ATTRS", "$(STARTD_ATTRS) RacfVMHookKeyword"),
    ]
    title = (f"Job hooks: jobs with +HookKeyword = \"{k}\" (the JAVA5 pattern) get them; "
             "they run as the job's user")
    return Section(title, tuple(settings))


def _transfer_plugin(cfg) -> Section:
    return Section("File-transfer plugin: an image URL becomes a qcow2 overlay in the sandbox", (
        Setting("ENABLE_URL_TRANSFERS", "True"),
        Setting("FILETRANSFER_PLUGINS", f"$(FILETRANSFER_PLUGINS), {_tool(cfg, ip.TRANSFER)}"),
    ))


def _slot(options: NodeOptions) -> Section:
    for what, factor in (("CPU", options.overprovision_cpus), ("memory", options.overprovision_memory)):
        if not 1 <= factor <= MAX_OVERPROVISION:
            raise ConfigError(f"the {what} over-provisioning factor must be 1..{MAX_OVERPROVISION}, "
                              f"not {factor}")
    settings = [
        Setting("NUM_SLOTS_TYPE_1", "1", "one partitionable slot holding the whole machine (seed 000)"),
        Setting("SLOT_TYPE_1", "100%"),
        Setting("SLOT_TYPE_1_PARTITIONABLE", "True"),
    ]
    if options.overprovision_cpus > 1:
        settings.append(Setting("NUM_CPUS", f"$(DETECTED_CPUS) * {options.overprovision_cpus}",
                                f"{options.overprovision_cpus}x the CPUs this machine has"))
    if options.overprovision_memory > 1:
        settings.append(Setting(
            "MEMORY", f"$(DETECTED_MEMORY) * {options.overprovision_memory}",
            f"{options.overprovision_memory}x the memory: guests may then exhaust the host's RAM"))
    return Section("Slots", tuple(settings))


def execute_node_config(cfg, config_path: str, options: NodeOptions = NodeOptions()) -> tuple[Section, ...]:
    """The execute node's configuration for the site config ``cfg`` read from ``config_path``."""
    if not options.partitionable_slot and (options.overprovision_cpus, options.overprovision_memory) != (1, 1):
        raise ConfigError("over-provisioning applies to the partitionable slot: add --partitionable-slot")
    sections = [_advertise(cfg, config_path), _vm_universe(cfg, config_path, options),
                _job_hooks(cfg, options), _transfer_plugin(cfg)]
    if options.partitionable_slot:
        sections.append(_slot(options))
    return tuple(sections)


def access_point_config(cfg) -> tuple[Section, ...]:
    """The access point's JobRouter route and hooks."""
    k = cfg.condor.hook_keyword
    route = "\n".join(("UNIVERSE VANILLA", f"REQUIREMENTS {ROUTE_REQUIREMENTS}"))
    return (
        Section("JobRouter: a vanilla job with +VM_Image = \"NAME\" runs through the racf-vm wrapper", (
            Setting("DAEMON_LIST", "$(DAEMON_LIST) JOB_ROUTER",
                    "changing DAEMON_LIST needs condor_restart"),
            Setting("JOB_ROUTER_HOOK_KEYWORD", k,
                    "the hooks see every routed job; jobs not marked for racf-vm pass unchanged"),
            Setting(f"{k}_HOOK_TRANSLATE_JOB", _tool(cfg, ip.ROUTE_TRANSLATE)),
            Setting(f"{k}_HOOK_JOB_FINALIZE", _tool(cfg, ip.ROUTE_FINALIZE)),
            Setting("JOB_ROUTER_ROUTE_NAMES", f"$(JOB_ROUTER_ROUTE_NAMES) {ip.ROUTE_NAME}"),
            Setting(f"JOB_ROUTER_ROUTE_{ip.ROUTE_NAME}", route),
        )),
    )


def tool_paths(sections: tuple[Section, ...], libexec_dir: str) -> list[str]:
    """The installed tools ``sections`` name (to tell the admin about missing ones)."""
    prefix = libexec_dir.rstrip("/") + "/"
    return [word for section in sections for s in section.settings
            for word in re.split(r"[\s,]+", s.value) if word.startswith(prefix)]


def _check(setting: Setting) -> None:
    if not NAME_RE.fullmatch(setting.name):
        raise InternalError(f"bad HTCondor configuration name {setting.name!r}")
    lines = setting.value.split("\n")
    if any(line.rstrip().endswith("\\") or line.strip() == f"@{MULTILINE_TAG}" for line in lines):
        raise InternalError(f"{setting.name}: a value line may not end in a backslash or be the tag")
    if "\n" in setting.comment:
        raise InternalError(f"{setting.name}: a comment is one line")


def render(sections: tuple[Section, ...], header: str) -> str:
    """HTCondor configuration text for ``sections``, after ``header`` (comment lines)."""
    out = [f"# {line}".rstrip() for line in header.splitlines()]
    for section in sections:
        out += ["", f"# --- {section.title}"]
        for s in section.settings:
            _check(s)
            if s.comment:
                out.append(f"# {s.comment}")
            if "\n" in s.value:
                out.append(f"{s.name} @={MULTILINE_TAG}")
                out += [f"  {line}" for line in s.value.split("\n")]
                out.append(f"@{MULTILINE_TAG}")
            else:
                out.append(f"{s.name} = {s.value}")
    return "\n".join(out) + "\n"
