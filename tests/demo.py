"""`make demo`: one real job end to end, shown step by step.

A job runs under the condor_starter stand-in as an unprivileged user, through the
installed setuid shim, and boots a real guest under QEMU via libvirt.
"""

import sys

from tests.support import services, testenv


def show(title, result):
    print(f"\n=== {title}")
    print(f"--- guest stdout:\n{result.stdout}", end="")
    extra = [l for l in result.stderr.splitlines() if not l.startswith("starter: sandbox=")]
    print("--- stderr:\n" + "\n".join(extra))
    print(f"--- wrapper exit status: {result.status}  ({result.seconds:.1f}s)")


def main() -> int:
    started = services.ensure_libvirtd()
    try:
        print("building (or reusing) the small test image ...", flush=True)
        testenv.small_site()
        uid = testenv.JOB_USERS["racfjob"]
        print(f"job user: racfjob, uid {uid}")
        script = 'echo "id -u in the guest: $(id -u)"; for a in "$@"; do printf "arg: <%s>\\n" "$a"; done; ' \
                 'echo "DEMO_VAR=$DEMO_VAR"; echo "cwd: $(pwd)"; exit 0'
        ok = testenv.run_job(
            "busybox", "/bin/sh", ["-c", script, "sh", "two words", 'say "hi"', "it's"],
            env={"DEMO_VAR": "set in the submit file"},
        )
        show("job 1: identity, arguments, environment (exits 0)", ok)
        fail = testenv.run_job("busybox", "/bin/sh", ["-c", "echo about to fail; exit 3"])
        show("job 2: exits 3", fail)
        good = (
            ok.status == 0
            and f"id -u in the guest: {uid}" in ok.stdout
            and "arg: <two words>" in ok.stdout
            and 'arg: <say "hi">' in ok.stdout
            and "DEMO_VAR=set in the submit file" in ok.stdout
            and fail.status == 3
        )
        print("\ndemo:", "OK" if good else "FAILED")
        return 0 if good else 1
    finally:
        left = testenv.leftovers()
        if left:
            print("leftovers:", left)
        if started:
            services.stop_libvirtd(started)


if __name__ == "__main__":
    sys.exit(main())
