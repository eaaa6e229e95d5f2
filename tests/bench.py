"""`make bench`: where the wrapper's time goes, against the floor of bare QEMU.

From one run: the floor (the same image booted directly with qemu-system running the
same command), the time from wrapper exec to the guest command starting, the wrapper's
total, one libguestfs launch, and the ratios. Goal (issue 2): overhead above the floor no
more than one libguestfs launch.
"""

import re
import statistics
import sys

from tests.images import qemu_direct
from tests.support import services, testenv

RUNS = 2


def _floor(image_dir):
    uid = testenv.JOB_USERS["racfjob"]
    ctx = qemu_direct.Context(uid=uid, gid=uid, user="racfjob", workdir="/scratch/job", argv=[b"/bin/true"])
    res = qemu_direct.run_job(str(image_dir), ctx)
    if res.exit_status != 0:
        raise SystemExit(f"bench: the floor run failed: {res.status_lines} {res.console[-2000:]!r}")
    return res.timings["qemu_total"], res.timings["boot_to_started"]


def _guestfs_launch(image_dir):
    """The yardstick: one plain libguestfs launch (default appliance) writing one file."""
    import subprocess
    import tempfile
    import time

    import guestfs

    meta = qemu_direct.load_image(str(image_dir))
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        overlay = f"{tmp}/overlay.qcow2"
        base = f"{image_dir}/{meta['disk']}"
        subprocess.run(["/usr/bin/qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, overlay], check=True)
        started = time.monotonic()
        g = guestfs.GuestFS(python_return_dict=True)
        g.set_backend("direct")
        g.set_backend_settings(["force_tcg"])
        g.add_drive_opts(overlay, format="qcow2")
        g.launch()
        g.mount(meta["root_device"], "/")
        g.write("/bench", b"x")
        g.umount_all()
        g.shutdown()
        g.close()
        return time.monotonic() - started


def _wrapper():
    res = testenv.run_job("busybox", "/bin/true", keep_sandbox=False, starter_opts=["--slot", "slot8_1"])
    if res.status != 0:
        raise SystemExit(f"bench: the wrapper run failed ({res.status}): {res.stderr}")
    started = float(re.search(r"guest command started ([0-9.]+)s after exec", res.stderr).group(1))
    guestfs = float(re.search(r"contextualized \S+ in ([0-9.]+)s", res.stderr).group(1))
    return res.seconds, started, guestfs


def main() -> int:
    started_services = services.ensure_libvirtd()
    try:
        image = testenv.small_site(log_level="info")["busybox"][0]
        _wrapper()  # warm-up: libguestfs appliances and KVM probe caches
        _guestfs_launch(image)
        floors, floor_starts, totals, starts, launches, plain = [], [], [], [], [], []
        for _ in range(RUNS):
            f, fs = _floor(image)
            floors.append(f)
            floor_starts.append(fs)
            total, start, launch = _wrapper()
            totals.append(total)
            starts.append(start)
            launches.append(launch)
            plain.append(_guestfs_launch(image))
        floor, floor_start = statistics.median(floors), statistics.median(floor_starts)
        total, start, launch = statistics.median(totals), statistics.median(starts), statistics.median(launches)
        yardstick = statistics.median(plain)
        overhead = total - floor
        print(f"bench (median of {RUNS}, TCG, small busybox image, command /bin/true)")
        print(f"  floor: bare qemu-system boot -> command started  {floor_start:6.2f} s")
        print(f"  floor: bare qemu-system total                    {floor:6.2f} s")
        print(f"  wrapper: exec -> guest command started           {start:6.2f} s  ({start / floor_start:.2f}x floor)")
        print(f"  wrapper: total                                   {total:6.2f} s  ({total / floor:.2f}x floor)")
        print(f"  wrapper overhead above the floor                 {overhead:6.2f} s")
        print(f"  our contextualization (fixed appliance)         {launch:6.2f} s")
        print(f"  one plain libguestfs launch (default appliance)  {yardstick:6.2f} s")
        verdict = "met" if overhead <= yardstick else f"missed by {overhead - yardstick:.2f} s"
        print(f"  goal: overhead <= one libguestfs launch: {verdict} ({overhead / yardstick:.2f} launches)")
        return 0
    finally:
        if started_services:
            services.stop_libvirtd(started_services)


if __name__ == "__main__":
    sys.exit(main())
