"""Thin adapter over libvirt-python: connect, start a transient domain, watch it end.

Every libvirt error that means "the infrastructure is not working" becomes a
TemporaryError (the job is retried). Domains are always transient and started with
VIR_DOMAIN_START_AUTODESTROY, so they die with our connection (even on SIGKILL).
"""

from __future__ import annotations

import logging
import threading
import time
import xml.etree.ElementTree as ET
from typing import Optional

import libvirt

from racf_vm.core.errors import TemporaryError
from racf_vm.core.jobtag import DOMAIN_PREFIX
from racf_vm.vm.domain_xml import parse_job_metadata

log = logging.getLogger(__name__)



_event_lock = threading.Lock()
_event_loop_started = False
# name -> threading.Event, set when a lifecycle STOPPED/UNDEFINED event arrives
_gone_events: dict[str, threading.Event] = {}


def _ignore_libvirt_error(_ctx: object, _err: object) -> None:
    """libvirt's default handler prints every error to stderr; we report them ourselves."""


libvirt.registerErrorHandler(_ignore_libvirt_error, None)


def _event_loop() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except libvirt.libvirtError:  # pragma: no cover - keep the loop alive
            time.sleep(0.1)


def _ensure_event_loop() -> None:
    """Register libvirt's default event loop (must precede open) and run it on a thread."""
    global _event_loop_started
    with _event_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_event_loop, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


def _lifecycle_cb(_conn: object, dom: "libvirt.virDomain", event: int, _detail: int, _o: object) -> None:
    if event in (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_UNDEFINED):
        with _event_lock:
            ev = _gone_events.get(dom.name())
        if ev is not None:
            ev.set()


def open_connection(uri: str = "qemu:///system", timeout: float = 30.0) -> "libvirt.virConnect":
    """Open ``uri`` within ``timeout`` seconds and subscribe to lifecycle events."""
    _ensure_event_loop()
    result: dict = {}

    def _open() -> None:
        try:
            result["conn"] = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            result["error"] = exc

    t = threading.Thread(target=_open, name="libvirt-open", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TemporaryError(
            f"libvirtd is not reachable at {uri} (no answer in {timeout:g}s); the job will be retried"
        )
    if "error" in result or result.get("conn") is None:
        err = result.get("error")
        raise TemporaryError(
            f"libvirtd is not reachable at {uri}; the job will be retried",
            detail=str(err or "libvirt.open returned None"),
        )
    conn = result["conn"]
    try:
        conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, _lifecycle_cb, None)
        # Detect a dead daemon instead of blocking on it forever.
        conn.setKeepAlive(5, 3)
    except libvirt.libvirtError as exc:
        conn.close()
        raise TemporaryError(f"libvirtd at {uri} refused event registration", detail=str(exc)) from exc
    return conn


def start_domain(conn: "libvirt.virConnect", xml: str) -> "libvirt.virDomain":
    """Create and start a transient domain that libvirt destroys when ``conn`` goes away."""
    try:
        return conn.createXML(xml, libvirt.VIR_DOMAIN_START_AUTODESTROY)
    except libvirt.libvirtError as exc:
        raise TemporaryError(
            "libvirt could not start the virtual machine; the job will be retried",
            detail=str(exc),
        ) from exc


def channel_socket_paths(dom: "libvirt.virDomain") -> dict[str, str]:
    """{virtio port name: host unix socket path} from the live domain XML."""
    try:
        root = ET.fromstring(dom.XMLDesc(0))
    except libvirt.libvirtError as exc:
        raise TemporaryError("the virtual machine disappeared while starting", detail=str(exc)) from exc
    paths: dict[str, str] = {}
    for ch in root.iterfind("devices/channel[@type='unix']"):
        target = ch.find("target[@type='virtio']")
        source = ch.find("source")
        if target is None or source is None:
            continue
        name, path = target.get("name"), source.get("path")
        if name and path:
            paths[name] = path
    return paths


def request_shutdown(dom: "libvirt.virDomain") -> None:
    """Ask the guest to power off (ACPI). Ignored when the domain is already gone."""
    try:
        dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
    except libvirt.libvirtError as exc:
        log.debug("shutdown request ignored: %s", exc)


def destroy(dom: "libvirt.virDomain") -> None:
    """Kill the domain now; a domain that is already gone is fine."""
    try:
        dom.destroy()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID):
            return
        raise TemporaryError("could not destroy the virtual machine", detail=str(exc)) from exc


def check_not_stopped_on_error(dom: "libvirt.virDomain") -> None:
    """TemporaryError when QEMU paused the guest on an I/O error (a full disk on the node:
    QEMU's default for ENOSPC is to stop and wait, which would otherwise wait for days)."""
    try:
        state, reason = dom.state(0)
    except libvirt.libvirtError:
        return  # gone: the channels' EOF tells the rest
    if state == libvirt.VIR_DOMAIN_PAUSED and reason == libvirt.VIR_DOMAIN_PAUSED_IOERROR:
        raise TemporaryError("the guest stopped on a disk error (is the node's disk full?); "
                             "the job will be retried")


def _exists(conn: "libvirt.virConnect", name: str) -> bool:
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise TemporaryError("libvirtd stopped answering", detail=str(exc)) from exc
    try:
        return bool(dom.isActive())
    except libvirt.libvirtError:
        return False  # vanished between lookup and isActive


def wait_gone(conn: "libvirt.virConnect", dom_name: str, timeout: float, recheck: float = 1.0) -> bool:
    """True once no active domain ``dom_name`` exists; False after ``timeout`` seconds.

    Woken by libvirt lifecycle events (open_connection subscribes); ``recheck`` bounds the
    wait between explicit look-ups, so a missed event costs at most that much.
    """
    ev = threading.Event()
    with _event_lock:
        _gone_events[dom_name] = ev
    try:
        deadline = time.monotonic() + timeout
        while True:
            if not _exists(conn, dom_name):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ev.wait(min(recheck, left))
    finally:
        with _event_lock:
            if _gone_events.get(dom_name) is ev:
                del _gone_events[dom_name]


def list_job_domains(conn: "libvirt.virConnect") -> list[tuple[str, dict]]:
    """Our domains (name prefix + racf metadata) as (name, metadata); for gc."""
    out: list[tuple[str, dict]] = []
    try:
        domains = conn.listAllDomains(0)
    except libvirt.libvirtError as exc:
        raise TemporaryError("libvirtd could not list domains", detail=str(exc)) from exc
    for dom in domains:
        try:
            name = dom.name()
            if not name.startswith(DOMAIN_PREFIX):
                continue
            meta = parse_job_metadata(dom.XMLDesc(0))
        except libvirt.libvirtError:
            continue  # gone meanwhile
        if meta is not None:
            out.append((name, meta))
    return out


def close_connection(conn: Optional["libvirt.virConnect"]) -> None:
    """Close ``conn`` (autodestroy domains die with it); errors ignored."""
    if conn is None:
        return
    try:
        conn.close()
    except libvirt.libvirtError:
        pass
