"""Boot a built test image with bare qemu-system-x86_64 (TCG) and a job context.

The floor for benchmarks and the harness for the guest runner tests:

    ctx = Context(uid=2501, gid=2501, user="racfjob", workdir="/scratch/job",
                  argv=[b"/bin/sh", b"-c", b"id -u"])
    res = run_job(image_dir, ctx)
    res.stdout, res.stderr, res.output (tar bytes), res.status_lines, res.timings

The context is written into a qcow2 overlay with python guestfs exactly as
docs/ARCHITECTURE.md ("Guest context layout") lays it out; the four guest channels are
virtio-serial ports whose host ends are unix sockets this module listens on.
"""
import dataclasses
import os
import socket
import subprocess
import tempfile
import threading
import time
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER = os.path.join(HERE, "..", "..", "images.d", "guest", "runner.sh")
CHANNELS = ("stdout", "stderr", "output", "status")
QEMU = "qemu-system-x86_64"


@dataclasses.dataclass
class Context:
    uid: int
    gid: int
    user: str
    workdir: str
    argv: list            # of bytes (or str)
    env: list = dataclasses.field(default_factory=list)   # of b"NAME=value"
    input_tar: bytes = None
    runner: str = RUNNER
    # raw overrides for hostile-input tests: file name under /racf/job -> bytes
    raw: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Result:
    stdout: bytes
    stderr: bytes
    output: bytes
    status: bytes
    console: bytes
    returncode: int          # qemu's
    timings: dict

    @property
    def status_lines(self):
        return self.status.decode(errors="replace").splitlines()

    @property
    def exit_status(self):
        for line in self.status_lines:
            if line.startswith("exit "):
                return int(line[5:])
        return None


def load_image(image_dir):
    with open(os.path.join(image_dir, "image.toml"), "rb") as f:
        meta = tomllib.load(f)
    meta["dir"] = image_dir
    return meta


def _b(x):
    return x if isinstance(x, bytes) else x.encode()


def write_context(overlay, root_device, ctx):
    """Write the job context into the overlay with libguestfs (direct backend, TCG)."""
    import guestfs
    g = guestfs.GuestFS(python_return_dict=True)
    try:
        g.set_backend("direct")
        g.set_backend_settings(["force_tcg"])
        g.add_drive_opts(overlay, format="qcow2", readonly=False)
        g.launch()
        g.mount(root_device, "/")

        def put(path, data, mode):
            g.write(path, _b(data))
            g.chown(0, 0, path)
            g.chmod(mode, path)

        def mkdir(path, mode):
            if not g.is_dir(path):
                g.mkdir(path)
            g.chown(0, 0, path)
            g.chmod(mode, path)

        put("/etc/rc.local", b"#!/bin/sh\nexec /racf/runner.sh\n", 0o755)
        mkdir("/racf", 0o700)
        with open(ctx.runner, "rb") as f:
            put("/racf/runner.sh", f.read(), 0o700)
        for d in ("/racf/job", "/racf/job/argv", "/racf/job/env"):
            mkdir(d, 0o700)
        files = {"uid": f"{ctx.uid}\n", "gid": f"{ctx.gid}\n", "user": f"{ctx.user}\n",
                 "workdir": f"{ctx.workdir}\n"}
        for i, a in enumerate(ctx.argv):
            files[f"argv/{i:04d}"] = a
        for i, e in enumerate(ctx.env):
            files[f"env/{i:04d}"] = e
        if ctx.input_tar is not None:
            files["input.tar"] = ctx.input_tar
        files.update(ctx.raw)
        for name, data in files.items():
            put("/racf/job/" + name, data, 0o600)
        g.umount_all()
        g.shutdown()
    finally:
        g.close()


class _Listener:
    """A listening unix socket; after accept() a thread reads it to EOF."""

    def __init__(self, path, on_data=None):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(1)
        self.data = bytearray()
        self.on_data = on_data
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.sock.settimeout(60)
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                self.data += chunk
                if self.on_data:
                    self.on_data(bytes(self.data))

    def close(self):
        self.sock.close()


def qemu_command(meta, overlay, sockets, console_log, memory_mb=512, cpus=1):
    d = meta["dir"]
    cmd = [QEMU, "-accel", "tcg", "-machine", meta.get("machine", "pc"),
           "-m", str(memory_mb), "-smp", str(cpus),
           "-nodefaults", "-nographic", "-no-reboot",
           "-kernel", os.path.join(d, meta["kernel"]),
           "-initrd", os.path.join(d, meta["initrd"]),
           "-append", meta["cmdline"],
           "-drive", f"file={overlay},format=qcow2,if=virtio,cache=unsafe",
           "-serial", f"file:{console_log}",
           "-device", "virtio-serial-pci,id=vser0"]
    for i, name in enumerate(CHANNELS):
        cmd += ["-chardev", f"socket,id=ch{i},path={sockets[name]}",
                "-device", f"virtserialport,bus=vser0.0,nr={i + 1},chardev=ch{i},"
                           f"name=org.racf.vm.{name}"]
    return cmd


def run_job(image_dir, ctx, timeout=300, memory_mb=512, extra_cmdline=""):
    """Overlay + context + boot; returns a Result once QEMU has exited."""
    meta = load_image(image_dir)
    if extra_cmdline:
        meta["cmdline"] += " " + extra_cmdline
    t = {}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="racf-qemu-") as tmp:
        overlay = os.path.join(tmp, "overlay.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", meta["format"],
                        "-b", os.path.join(image_dir, meta["disk"]), overlay], check=True)
        t["overlay"] = time.monotonic() - t0
        t1 = time.monotonic()
        write_context(overlay, meta["root_device"], ctx)
        t["context"] = time.monotonic() - t1

        marks = {}

        def on_status(data):
            for line in data.decode(errors="replace").splitlines():
                key = line.split(" ", 1)[0]
                marks.setdefault(key, time.monotonic())

        sockets = {n: os.path.join(tmp, f"{n}.sock") for n in CHANNELS}
        listeners = {n: _Listener(p, on_status if n == "status" else None)
                     for n, p in sockets.items()}
        console_log = os.path.join(tmp, "console.log")
        cmd = qemu_command(meta, overlay, sockets, console_log, memory_mb)
        t2 = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            _, qerr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, qerr = proc.communicate()
        t3 = time.monotonic()
        for li in listeners.values():
            li.thread.join(5)
            li.close()
        t["boot_to_started"] = marks["started"] - t2 if "started" in marks else None
        t["boot_to_exit_line"] = marks["exit"] - t2 if "exit" in marks else None
        t["qemu_total"] = t3 - t2
        t["total"] = t3 - t0
        with open(console_log, "rb") as f:
            console = f.read()
        if proc.returncode and qerr:
            console += b"\n[qemu stderr] " + qerr
        return Result(stdout=bytes(listeners["stdout"].data),
                      stderr=bytes(listeners["stderr"].data),
                      output=bytes(listeners["output"].data),
                      status=bytes(listeners["status"].data),
                      console=console, returncode=proc.returncode, timings=t)


if __name__ == "__main__":
    import sys
    r = run_job(sys.argv[1], Context(uid=2501, gid=2501, user="racfjob",
                                     workdir="/scratch/job",
                                     argv=[a.encode() for a in sys.argv[2:]] or [b"id"]))
    sys.stdout.buffer.write(r.stdout)
    sys.stderr.buffer.write(r.stderr)
    print(r.status_lines, r.timings, file=sys.stderr)
