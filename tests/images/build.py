#!/usr/bin/env python3
"""Build the racf-vm test images.

    python -m tests.images.build small|sitenfs|debian [--cache /var/cache/racf-vm-test]

Prints the directory of the built image: <cache>/<name>-<hash16>/ where hash16 is the
first 16 hex digits of a sha256 over this script, the recipe directories (tests/images/<name>/
and those it builds on: sitenfs is small with the guest kernel's NFS client and a site boot
step, tests/images/sitenfs/) and, for the busybox images, the host kernel they copy (release and image checksum: a kernel
update rebuilds the image instead of reusing modules that no longer match).
An existing directory is reused. A build happens in a temp dir under the cache and is renamed
into place atomically. Each image directory holds disk.qcow2 (qcow2 v3), vmlinuz, initrd and
image.toml. Needs root (mmdebstrap for debian; ownership in the images).
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

from racf_vm.vm.kernelimage import extract_vmlinux
from tests.support.hostkernel import installed_kernel

HERE = os.path.dirname(os.path.abspath(__file__))
BUSYBOX = "/bin/busybox"
CMDLINE = "root=/dev/vda rw console=ttyS0 quiet panic=-1"
DEFAULT_CACHE = "/var/cache/racf-vm-test"


def log(*a):
    print("build:", *a, file=sys.stderr, flush=True)


def run(*cmd, **kw):
    log("+", " ".join(cmd))
    return subprocess.run(cmd, check=True, **kw)


def recipe_dirs(name):
    """The recipe's directories: those it builds on first, its own last."""
    return [os.path.join(HERE, layer) for layer in RECIPE_LAYERS.get(name, (name,))]


def recipe_file(name, fname):
    """``fname`` of the recipe: its own, else the one of the recipe it builds on."""
    for rdir in reversed(recipe_dirs(name)):
        path = os.path.join(rdir, fname)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"recipe {name} has no {fname}")


def recipe_hash(name):
    h = hashlib.sha256()
    for line in RECIPE_INPUTS.get(name, lambda: [])():
        h.update(line.encode() + b"\n")
    files = [os.path.abspath(__file__)]
    for rdir in recipe_dirs(name):
        for f in sorted(os.listdir(rdir)):
            files.append(os.path.join(rdir, f))
    for path in files:
        with open(path, "rb") as fh:
            data = fh.read()
        rel = os.path.relpath(path, HERE).encode()
        h.update(b"%d:%s%d:" % (len(rel), rel, len(data)) + data)
    return h.hexdigest()[:16]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- kernel modules

def module_deps(moddir):
    """modules.dep -> {name: (relpath, [dep names])}"""
    deps = {}
    with open(os.path.join(moddir, "modules.dep")) as f:
        for line in f:
            mod, _, rest = line.partition(":")
            deps[modname(mod)] = (mod, [modname(d) for d in rest.split()])
    return deps


def modname(path):
    base = os.path.basename(path)
    for ext in (".ko", ".ko.xz", ".ko.zst", ".ko.gz"):
        if base.endswith(ext):
            base = base[: -len(ext)]
    return base.replace("-", "_")


def module_closure(deps, roots):
    """Return module relpaths in load order (dependencies first)."""
    order, seen = [], set()

    def visit(name):
        name = name.replace("-", "_")
        if name in seen:
            return
        seen.add(name)
        path, needs = deps[name]
        for d in needs:
            visit(d)
        order.append(path)

    for r in roots:
        visit(r)
    return order


def read_module_lists(name):
    lists = {}
    with open(recipe_file(name, "modules")) as f:
        for line in f:
            words = line.split("#")[0].split()
            if words:
                lists[words[0]] = words[1:]
    return lists


# ---------------------------------------------------------------- helpers

def install_busybox(root):
    """busybox-static at /bin/busybox plus a symlink per applet."""
    for d in ("bin", "sbin", "usr/bin", "usr/sbin"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    shutil.copy2(BUSYBOX, os.path.join(root, "bin/busybox"))
    out = subprocess.run([BUSYBOX, "--list-full"], check=True, capture_output=True, text=True).stdout
    for applet in out.split():
        link = os.path.join(root, applet)
        if not os.path.lexists(link):
            os.symlink("/bin/busybox", link)


def make_ext4(srcdir, image, extra_mb):
    used = int(subprocess.run(["du", "-sm", srcdir], check=True, capture_output=True,
                              text=True).stdout.split()[0])
    size_mb = int(used * 1.2) + extra_mb
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    run("mkfs.ext4", "-q", "-F", "-L", "racfroot", "-E", "root_owner=0:0", "-d", srcdir, image)


def to_qcow2(raw, qcow):
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1", raw, qcow)
    os.unlink(raw)


def install_kernel(bzimage, out):
    """Copy the bzImage as vmlinuz and add vmlinux; return the file name to boot."""
    shutil.copy2(bzimage, os.path.join(out, "vmlinuz"))
    return "vmlinux" if extract_vmlinux(bzimage, os.path.join(out, "vmlinux")) else "vmlinuz"


def write_toml(out, name, cmdline, extra):
    digest = sha256_file(os.path.join(out, "disk.qcow2"))
    lines = [
        f'name = "{name}"',
        'disk = "disk.qcow2"',
        'format = "qcow2"',
        f'sha256 = "{digest}"',
        'root_device = "/dev/sda"   # as libguestfs names it (whole-disk ext4, no partitions)',
        'guest_root_device = "/dev/vda"   # inside the guest (virtio-blk)',
        'boot = "direct-kernel"',
        'initrd = "initrd"',
        f'cmdline = "{cmdline}"',
        'machine = "pc"',
        'needs_acpi = true',
    ]
    lines += [f'{k} = "{v}"' for k, v in extra.items()]
    with open(os.path.join(out, "image.toml"), "w") as f:
        f.write("\n".join(lines) + "\n")


# ---------------------------------------------------------------- small

def host_kernel_inputs():
    kernel = installed_kernel()
    return [f"kernel {kernel.release} sha256 {kernel.fingerprint()}"]


def build_small(out, tmp, name="small"):
    """The busybox image; recipes built on it ("sitenfs") change its files and modules and
    may add ``rc.site``, the site's boot steps (rcS runs it as root before the job), and
    ``probe.c`` (tests/integration/netprobe's probe, built static as /usr/local/bin/probe)."""
    lists = read_module_lists(name)
    kernel = installed_kernel()
    host_modules = str(kernel.modules)
    deps = module_deps(host_modules)

    # root filesystem staging dir
    root = os.path.join(tmp, "root")
    os.makedirs(root)
    install_busybox(root)
    for d in ("proc", "sys", "dev", "tmp", "root", "etc/init.d", "racf", "home", "var"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    os.chmod(os.path.join(root, "root"), 0o700)
    for src, dst, mode in (("inittab", "etc/inittab", 0o644), ("rcS", "etc/init.d/rcS", 0o755),
                           ("passwd", "etc/passwd", 0o644), ("group", "etc/group", 0o644)):
        shutil.copyfile(recipe_file(name, src), os.path.join(root, dst))
        os.chmod(os.path.join(root, dst), mode)
    own = recipe_dirs(name)[-1]
    if name != "small" and os.path.exists(os.path.join(own, "rc.site")):
        shutil.copyfile(os.path.join(own, "rc.site"), os.path.join(root, "etc/rc.site"))
        os.chmod(os.path.join(root, "etc/rc.site"), 0o755)
    if name != "small" and os.path.exists(os.path.join(own, "probe.c")):  # binds source ports
        os.makedirs(os.path.join(root, "usr/local/bin"), exist_ok=True)
        run("gcc", "-static", "-O2", "-o", os.path.join(root, "usr/local/bin/probe"),
            os.path.join(own, "probe.c"))
    with open(os.path.join(root, "etc/shells"), "w") as f:
        f.write("/bin/sh\n")
    moddst = os.path.join(root, "lib/modules", kernel.release)
    rootmods = module_closure(deps, lists["root"])
    for rel in rootmods:
        os.makedirs(os.path.join(moddst, os.path.dirname(rel)), exist_ok=True)
        shutil.copy2(os.path.join(host_modules, rel), os.path.join(moddst, rel))
    with open(os.path.join(moddst, "modules.dep"), "w") as f:
        for rel in rootmods:
            needs = [deps[d][0] for d in deps[modname(rel)][1]]
            f.write(" ".join([rel + ":"] + needs) + "\n")
    raw = os.path.join(tmp, "disk.raw")
    make_ext4(root, raw, extra_mb=256)
    to_qcow2(raw, os.path.join(out, "disk.qcow2"))

    # initramfs
    ird = os.path.join(tmp, "initramfs")
    for d in ("bin", "proc", "sys", "dev", "modules", "newroot"):
        os.makedirs(os.path.join(ird, d))
    shutil.copy2(BUSYBOX, os.path.join(ird, "bin/busybox"))
    for applet in ("sh", "mount", "umount", "insmod", "switch_root", "sleep", "mkdir", "cat",
                   "echo", "poweroff"):
        os.symlink("busybox", os.path.join(ird, "bin", applet))
    shutil.copyfile(recipe_file(name, "init"), os.path.join(ird, "init"))
    os.chmod(os.path.join(ird, "init"), 0o755)
    names = []
    for rel in module_closure(deps, lists["initrd"]):
        shutil.copy2(os.path.join(host_modules, rel), os.path.join(ird, "modules"))
        names.append(os.path.basename(rel))
    with open(os.path.join(ird, "modules/order"), "w") as f:
        f.write("\n".join(names) + "\n")
    with open(os.path.join(out, "initrd"), "wb") as f:
        find = subprocess.Popen(["find", "."], cwd=ird, stdout=subprocess.PIPE)
        cpio = subprocess.Popen(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"], cwd=ird,
                                stdin=find.stdout, stdout=subprocess.PIPE)
        gz = subprocess.Popen(["gzip", "-9n"], stdin=cpio.stdout, stdout=f)
        find.stdout.close()
        cpio.stdout.close()
        if gz.wait() or cpio.wait() or find.wait():
            raise RuntimeError("initramfs build failed")
    boot_file = install_kernel(str(kernel.vmlinuz), out)
    write_toml(out, name, CMDLINE, {"kernel": boot_file, "kernel_bzimage": "vmlinuz",
                                       "kernel_version": kernel.release, "init": "busybox"})


# ---------------------------------------------------------------- debian

def apt_mirrors(suite_base="bookworm"):
    """mmdebstrap mirror lines from this machine's deb822 /etc/apt/sources.list.d/*.sources
    and one-line sources.list entries, keeping only Debian's (suite name starts with suite_base)."""
    lines = []
    paths = []
    if os.path.exists("/etc/apt/sources.list"):
        paths.append("/etc/apt/sources.list")
    d = "/etc/apt/sources.list.d"
    if os.path.isdir(d):
        paths += [os.path.join(d, f) for f in sorted(os.listdir(d))
                  if f.endswith((".list", ".sources"))]
    for p in paths:
        text = open(p).read()
        if p.endswith(".sources"):
            for stanza in text.split("\n\n"):
                fields = {}
                for ln in stanza.splitlines():
                    if ln.startswith("#") or ":" not in ln or ln[:1].isspace():
                        continue
                    k, _, v = ln.partition(":")
                    fields[k.strip().lower()] = v.split()
                if "deb" not in fields.get("types", []) or fields.get("enabled") == ["no"]:
                    continue
                for uri in fields.get("uris", []):
                    for suite in fields.get("suites", []):
                        if suite.startswith(suite_base):
                            lines.append(f"deb {uri} {suite} {' '.join(fields.get('components', ['main']))}")
        else:
            for ln in text.splitlines():
                w = ln.split("#")[0].split()
                if len(w) >= 3 and w[0] == "deb" and not w[1].startswith("["):
                    if w[2].startswith(suite_base):
                        lines.append(" ".join(w))
    if not lines:
        raise RuntimeError("no Debian bookworm mirror configured in /etc/apt")
    return lines


def build_debian(out, tmp):
    rdir = os.path.join(HERE, "debian")
    pkgs = open(os.path.join(rdir, "packages")).read().split()
    mirrors = apt_mirrors()
    root = os.path.join(tmp, "root")
    cmd = ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=directory",
           "--include=" + ",".join(pkgs)]
    for opt in open(os.path.join(rdir, "dpkg-excludes")).read().split():
        cmd.append("--dpkgopt=" + opt)
    setup = (f'mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/etc/initramfs-tools/hooks" && '
             f'cp {rdir}/initramfs.conf "$1/etc/initramfs-tools/conf.d/racf.conf" && '
             f'cp {rdir}/initramfs-hook "$1/etc/initramfs-tools/hooks/racf" && '
             f'chmod 755 "$1/etc/initramfs-tools/hooks/racf"')
    cmd.append("--setup-hook=" + setup)
    masks = open(os.path.join(rdir, "mask-units")).read().split()
    custom = (f'cp {rdir}/fstab "$1/etc/fstab" && cp {rdir}/hostname "$1/etc/hostname" && '
              f'for u in {" ".join(masks)}; do ln -sf /dev/null "$1/etc/systemd/system/$u"; done && '
              f'rm -f "$1/etc/rc.local" && '
              f'test -x "$1/lib/systemd/system-generators/systemd-rc-local-generator" && '
              f'test -f "$1/lib/systemd/system/rc-local.service"')
    cmd.append("--customize-hook=" + custom)
    cmd += ["bookworm", root] + mirrors
    run(*cmd)
    boot = os.path.join(root, "boot")
    kernels = sorted(f for f in os.listdir(boot) if f.startswith("vmlinuz-"))
    initrds = sorted(f for f in os.listdir(boot) if f.startswith("initrd.img-"))
    if len(kernels) != 1 or len(initrds) != 1:
        raise RuntimeError(f"expected one kernel and initrd in /boot: {kernels} {initrds}")
    kernel = install_kernel(os.path.join(boot, kernels[0]), out)
    shutil.copy2(os.path.join(boot, initrds[0]), os.path.join(out, "initrd"))
    raw = os.path.join(tmp, "disk.raw")
    make_ext4(root, raw, extra_mb=512)
    shutil.rmtree(root)
    to_qcow2(raw, os.path.join(out, "disk.qcow2"))
    write_toml(out, "debian", CMDLINE, {
        "kernel": kernel,
        "kernel_bzimage": "vmlinuz",
        "kernel_version": kernels[0][len("vmlinuz-"):],
        "init": "systemd",
        "kernel_source": "copied from the image's /boot",
        "mirror": mirrors[0].split()[1],
    })


BUILDERS = {"small": build_small, "debian": build_debian,
            "sitenfs": lambda out, tmp: build_small(out, tmp, "sitenfs")}
# Recipes built on others (tests/images/<layer>/, the last one's files win).
RECIPE_LAYERS = {"sitenfs": ("small", "sitenfs")}
# What a recipe depends on beyond its files (the debian image brings its own kernel).
RECIPE_INPUTS = {"small": host_kernel_inputs, "sitenfs": host_kernel_inputs}


def build(name, cache=DEFAULT_CACHE):
    """Build (or reuse) image `name`; return its directory."""
    final = os.path.join(cache, f"{name}-{recipe_hash(name)}")
    if os.path.isfile(os.path.join(final, "image.toml")):
        return final
    os.makedirs(cache, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}-build-", dir=cache)
    try:
        out = os.path.join(tmp, "out")
        os.makedirs(out)
        t0 = time.monotonic()
        BUILDERS[name](out, tmp)
        with open(os.path.join(out, "build-seconds"), "w") as f:
            f.write(f"{time.monotonic() - t0:.1f}\n")
        os.chmod(out, 0o755)
        try:
            os.rename(out, final)
        except OSError:
            if not os.path.isfile(os.path.join(final, "image.toml")):
                raise   # someone else won the race otherwise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", choices=sorted(BUILDERS))
    ap.add_argument("--cache", default=DEFAULT_CACHE)
    args = ap.parse_args()
    print(build(args.name, args.cache))


if __name__ == "__main__":
    main()
