"""Where the HTCondor integrations are installed, and what they are called: one place.

``make install`` puts each tool below as a console script of the venv and links it into
``$(PREFIX)/libexec/racf-vm/`` (``[condor] libexec_dir`` in the site config, for another
PREFIX); `racf-vm condor-config` prints those paths into the HTCondor configuration, and
tests/unit/test_condor_config.py checks every path it prints against the Makefile's
install target and pyproject's scripts. A tool's name here, its entry point in
``pyproject.toml`` ([project.scripts]) and its line in the Makefile (INTEGRATION_TOOLS)
must agree (the same test checks that too).

Calling conventions (how HTCondor runs each one; htcondor.md §4-§8):

- ``racf-vm-advertise``: STARTD_CRON, as the condor user; argv ``NAME [--config PATH]``.
- ``racf-vm-libvirt-xml``: LIBVIRT_XML_SCRIPT, as root by condor_vm-gahp; job ad on stdin;
  ``LIBVIRT_XML_SCRIPT_ARGS`` gives ``--config PATH``.
- ``racf-vm-hook-prepare`` / ``racf-vm-hook-exit``: <KEYWORD>_HOOK_PREPARE_JOB / _JOB_EXIT,
  as the job's user; they read the default config (DEFAULT_CONFIG).
- ``racf-vm-transfer``: FILETRANSFER_PLUGINS, as the job's user; default config.
- ``racf-vm-route-translate`` / ``racf-vm-route-finalize``: JobRouter <KEYWORD>_HOOK_TRANSLATE_JOB
  / _JOB_FINALIZE on the access point, no arguments; default config.
"""

from __future__ import annotations

import os

DEFAULT_CONFIG = "/etc/racf-vm/racf-vm.toml"  # the compiled-in config path of the shim too
DEFAULT_LIBEXEC_DIR = "/usr/local/libexec/racf-vm"  # $(PREFIX)/libexec/racf-vm, PREFIX=/usr/local

ADVERTISE = "racf-vm-advertise"
LIBVIRT_XML = "racf-vm-libvirt-xml"
HOOK_PREPARE = "racf-vm-hook-prepare"
HOOK_EXIT = "racf-vm-hook-exit"
TRANSFER = "racf-vm-transfer"
ROUTE_TRANSLATE = "racf-vm-route-translate"
ROUTE_FINALIZE = "racf-vm-route-finalize"

# tool -> "module:function" (pyproject.toml [project.scripts] says the same)
ENTRY_POINTS = {
    ADVERTISE: "racf_vm.condor.advertise:main",
    LIBVIRT_XML: "racf_vm.condor.xmlscript:main",
    HOOK_PREPARE: "racf_vm.condor.hooks:prepare_main",
    HOOK_EXIT: "racf_vm.condor.hooks:exit_main",
    TRANSFER: "racf_vm.condor.transfer:main",
    ROUTE_TRANSLATE: "racf_vm.condor.jobrouter:translate_main",
    ROUTE_FINALIZE: "racf_vm.condor.jobrouter:finalize_main",
}

# The name of the STARTD_CRON job (argv[1] of the advertiser) and of the JobRouter route.
CRON_JOB_NAME = "RACFVM"
ROUTE_NAME = "RacfVM"
# A vanilla job asks to be routed (or rewritten by PREPARE_JOB) with +VM_Image = "NAME".
JOB_IMAGE_ATTR = "VM_Image"


def tool_path(libexec_dir: str, tool: str) -> str:
    """The installed path of ``tool`` (one of ENTRY_POINTS)."""
    if tool not in ENTRY_POINTS:
        raise KeyError(tool)
    return os.path.join(libexec_dir, tool)
