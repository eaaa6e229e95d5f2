"""Boot a built test image with bare qemu-system-x86_64 (TCG) and a job context.

The floor for benchmarks and the harness for the guest runner tests:

    ctx = Context(uid=2501, gid=2501, user="racfjob", workdir="/scratch/job",
                  argv=[b"/bin/sh", b"-c", b"id -u"])
    res = run_job(image_dir, ctx)
    res.stdout, res.stderr, res.output (tar bytes), res.status_lines, res.timings

Exactly what a job gets, without libvirt and without the wrapper's checks: the image is
prepared by the product itself (racf_vm.images.prepare: the runner and its hook in a layer
on the base, made once), the job's overlay sits on that layer, and the context disk is
written by the product's own writer (racf_vm.guest.contextdisk). The four guest channels
are virtio-serial ports whose host ends are unix sockets this module listens on.
"""
import dataclasses
import os
import socket
import subprocess
import tempfile
import threading
import time
import tomllib
from types import SimpleNamespace

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER = os.path.join(HERE, "..", "..", "images.d", "guest", "runner.sh")
CHANNELS = ("stdout", "stderr", "output", "status")
QEMU = "qemu-system-x86_64"
STATE = "/var/lib/racf-vm-test/direct"  # prepared layers of the test images (root-owned)


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
    workdir_root: str = None   # default: the parent of workdir (as the wrapper sends it)


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


def _text(x):
    return x.decode() if isinstance(x, bytes) else x


def prepared_layer(meta, runner: bytes) -> str:
    """The product's prepared layer for this test image (made on first use)."""
    from racf_vm.config import parse_config
    from racf_vm.images.catalog import BootSpec, ContextSpec, ImageEntry
    from racf_vm.images.imageheader import validate_base_image
    from racf_vm.images.prepare import ensure_prepared

    os.makedirs(STATE, mode=0o711, exist_ok=True)
    disk = os.path.join(meta["dir"], meta["disk"])
    hook = "systemd" if meta.get("init") == "systemd" else "rc.local"
    entry = ImageEntry(name=meta["name"], trust="trusted", path=disk, format=meta["format"],
                       sha256=meta["sha256"], boot=BootSpec("bootloader"),
                       context=ContextSpec(meta["root_device"], "ext4", hook))
    config = parse_config(f'[paths]\nstate_dir = "{STATE}"\n'.encode(), "qemu_direct")
    base = validate_base_image(disk, meta["format"])
    return ensure_prepared(entry, base, runner, config, "tcg").path


def write_context(path, ctx):
    """The job's context disk, written by the product's writer."""
    from racf_vm.guest.contextdisk import write_context_disk

    env = []
    for e in ctx.env:
        name, _, value = _text(e).partition("=")
        env.append((name, value))
    request = SimpleNamespace(uid=ctx.uid, gid=ctx.gid, user=ctx.user, workdir=ctx.workdir,
                              command=_text(ctx.argv[0]), args=tuple(_text(a) for a in ctx.argv[1:]),
                              env=tuple(env))
    write_input = None if ctx.input_tar is None else (lambda out: out.write(ctx.input_tar))
    root = ctx.workdir_root if ctx.workdir_root is not None else os.path.dirname(ctx.workdir)
    with open(path, "w+b") as f:
        write_context_disk(f, request, root, write_input)


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


def qemu_command(meta, overlay, context, sockets, console_log, memory_mb=512, cpus=1):
    d = meta["dir"]
    cmd = [QEMU, "-accel", "tcg", "-machine", meta.get("machine", "pc"),
           "-m", str(memory_mb), "-smp", str(cpus),
           "-nodefaults", "-nographic", "-no-reboot",
           "-kernel", os.path.join(d, meta["kernel"]),
           "-initrd", os.path.join(d, meta["initrd"]),
           "-append", meta["cmdline"],
           # root first on the PCI bus, as libvirt orders them: the guest calls it vda
           "-drive", f"file={overlay},format=qcow2,if=none,id=root,cache=unsafe",
           "-device", "virtio-blk-pci,drive=root,addr=0x10",
           "-drive", f"file={context},format=raw,if=none,id=ctx,readonly=on",
           "-device", "virtio-blk-pci,drive=ctx,serial=racf-context,addr=0x11",
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
    with open(ctx.runner, "rb") as f:
        layer = prepared_layer(meta, f.read())
    t["prepare"] = time.monotonic() - t0
    with tempfile.TemporaryDirectory(prefix="racf-qemu-", dir="/var/tmp") as tmp:
        overlay = os.path.join(tmp, "overlay.qcow2")
        t1 = time.monotonic()
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", layer, overlay],
                       check=True)
        context = os.path.join(tmp, "context.img")
        write_context(context, ctx)
        t["overlay_and_context"] = time.monotonic() - t1

        marks = {}

        def on_status(data):
            for line in data.decode(errors="replace").splitlines():
                key = line.split(" ", 1)[0]
                marks.setdefault(key, time.monotonic())

        sockets = {n: os.path.join(tmp, f"{n}.sock") for n in CHANNELS}
        listeners = {n: _Listener(p, on_status if n == "status" else None)
                     for n, p in sockets.items()}
        console_log = os.path.join(tmp, "console.log")
        cmd = qemu_command(meta, overlay, context, sockets, console_log, memory_mb)
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
