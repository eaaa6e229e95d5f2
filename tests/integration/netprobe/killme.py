"""A stand-in wrapper for the SIGKILL test: lease, boot a guest, wait to be killed.

    killme.py STATE_DIR NAME ROOT IMAGE_DIR OVERLAY JOB_DIR
Prints "READY <tag> <ip>" once the guest is booting on the untrusted network.
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.abspath(os.path.join(HERE, "..", "..", "..")))

import netpolicy  # noqa: E402
from racf_vm.core import jobtag  # noqa: E402
from racf_vm.vm import domain  # noqa: E402
from tests.integration.netprobe import harness  # noqa: E402


def main():
    state_dir, name, root, image_dir = sys.argv[1:5]
    cfg = harness.load_config(state_dir)
    guests = harness.Guests(root, image_dir)
    ov, job_dir = sys.argv[5], sys.argv[6]
    guests.overlays[name] = (ov, job_dir, os.path.join(image_dir, guests.meta["disk"]))
    owner = jobtag.self_owner()
    tag = jobtag.make_tag("kill", 1, 0, owner)
    conn = domain.open_connection("qemu:///system")
    with netpolicy.untrusted_lease(conn, cfg, tag) as lease:
        spec = guests.spec(name, tag, owner.pid, network=lease.network_name, mac=lease.mac)
        guests.boot(conn, spec)
        print(f"READY {tag} {lease.ip} {guests.consoles[name]}", flush=True)
        while True:
            time.sleep(60)


if __name__ == "__main__":
    main()
