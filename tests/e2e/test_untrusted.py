"""End-to-end: an untrusted image's job runs behind the NAT network, through the real shim.

What the guest can and cannot reach is proven with real packets in
tests/integration/test_netpolicy_guests.py; here the wrapper's own path: lease, rules and
reservation made before boot, the guest gets its reserved address, all removed after.
"""

import pytest

from tests.support import testenv

pytestmark = [pytest.mark.vm, pytest.mark.root]


def test_untrusted_job_gets_its_reserved_address_and_leaves_nothing(site):
    small = site["images"]["busybox"][0]
    images = dict(site["images"], **{"busybox-nat": (small, "untrusted")})
    testenv.write_site(images)
    try:
        script = "id -u; ip -4 -o addr show dev eth0"
        result = testenv.run_job("busybox-nat", "/bin/sh", ["-c", script])
    finally:
        testenv.write_site(site["images"])
    assert result.status == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == str(testenv.JOB_USERS["racfjob"])  # untrusted or not: never root
    assert "inet 10.213.0." in lines[1], result.stdout
