"""`racf-vm doctor`: what this node still lacks to run a first job, each with its fix.

Every check yields one ``Finding``: a line saying what was checked and, when it failed, the
command or step that fixes it. Checks go on after a failure wherever the rest can still be
checked, so a new admin sees the whole list at once.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Callable, Iterator

import click

from racf_vm.cli.policy import policy_problems
from racf_vm.core.errors import ConfigError, RacfError
from racf_vm.core.unixsock import socket_answers

SHIM = "/usr/local/racf/vm"
VIRTLOGD_SOCKET = "/run/libvirt/virtlogd-sock"
SYSTEMD_RUNNING = "/run/systemd/system"


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str
    fix: str = ""  # for a failure: the command or step that fixes it

    def line(self) -> str:
        if self.ok:
            return f"ok   {self.what}"
        return f"FAIL {self.what}" + (f" -> {self.fix}" if self.fix else "")


def start_command(daemon: str) -> str:
    """How to start ``daemon`` on this host: systemctl where systemd runs, else the daemon itself."""
    if os.path.isdir(SYSTEMD_RUNNING):
        return f"systemctl enable --now {daemon}"
    return f"{daemon} -d"


def check_shim(path: str = SHIM) -> Finding:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Finding(False, f"{path} is not installed", "make install")
    ok = bool(st.st_mode & stat.S_ISUID) and st.st_uid == 0
    return Finding(ok, f"{path} is setuid root", "" if ok else f"chown root:root {path} && chmod 4755 {path}")


def check_virtlogd(path: str = VIRTLOGD_SOCKET) -> Finding:
    if socket_answers(path):
        return Finding(True, "virtlogd is running")
    return Finding(False, f"virtlogd is not running (nothing answers on {path}); libvirt cannot start guests",
                   start_command("virtlogd"))


def check_libvirtd(uri: str, connect_timeout: float) -> Finding:
    from racf_vm.vm import domain

    try:
        conn = domain.open_connection(uri, connect_timeout)
    except RacfError:
        return Finding(False, f"libvirtd is not reachable at {uri}", start_command("libvirtd"))
    domain.close_connection(conn)
    return Finding(True, f"libvirtd reachable at {uri}")


def check_starter(starter: str, config_path: str) -> Finding:
    fix = (f"install HTCondor, or set [parent] starter in {config_path} to what "
           "`condor_config_val STARTER` prints")
    try:
        st = os.stat(starter)
    except FileNotFoundError:
        return Finding(False, f"the condor_starter {starter} does not exist", fix)
    if not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o111:
        return Finding(False, f"the condor_starter {starter} is not an executable file", fix)
    return Finding(True, f"condor_starter {starter}")


def check_prep_account(name: str) -> Finding:
    from racf_vm.images.prepare import prep_account

    try:
        account = prep_account(name)
    except RacfError as exc:
        return Finding(False, exc.message, "make install")
    return Finding(True, f"images are prepared as {account.name} (uid {account.uid})")


def check_accel(config_accel: str, state_dir: str, emulator: str) -> Finding:
    from racf_vm.vm import accel

    try:
        kind = accel.choose_accel(config_accel, state_dir, emulator)
    except RacfError as exc:
        return Finding(False, exc.message, "make deps (installs qemu-system-x86)")
    note = "" if kind == "kvm" else " (KVM does not boot guests here: slower, but it works)"
    return Finding(True, f"accelerator: {kind}{note}")


def checks(config_path: str, load_config: Callable, policy_problems: Callable[[], Iterator[str]]
           ) -> Iterator[Finding]:
    """All findings for this node. ``load_config`` returns the validated config (or raises);
    ``policy_problems`` yields `racf-vm policy check`'s lines (each says what to do)."""
    yield Finding(os.geteuid() == 0, "running as root", "run racf-vm doctor as root")
    yield check_shim()
    yield check_virtlogd()
    try:
        cfg = load_config()
    except RacfError as exc:
        yield Finding(False, f"config: {exc.message}",
                      f"fix {config_path} (an example: etc/racf-vm.toml of the source tree)")
        return
    yield Finding(True, f"config {config_path}")
    yield check_libvirtd(cfg.libvirt.uri, cfg.timeouts.libvirt_connect)
    yield check_starter(cfg.parent.starter, config_path)
    yield check_prep_account(cfg.guestfs.user)
    yield check_accel(cfg.libvirt.accel, cfg.paths.state_dir, cfg.libvirt.emulator)
    for line in policy_problems():
        yield Finding(False, line)


@click.command("doctor")
@click.pass_obj
def doctor_command(obj):
    """Check that this node can run VM jobs; each failure says what fixes it."""
    failures = 0
    for finding in checks(obj.config_path, lambda: obj.config, lambda: policy_problems(obj)):
        click.echo(finding.line())
        failures += not finding.ok
    if failures:
        raise ConfigError(f"{failures} check(s) failed; fix them in the order shown, then run racf-vm doctor again")
    click.echo("doctor: this node can run racf-vm jobs")
