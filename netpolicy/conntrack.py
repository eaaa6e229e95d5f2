"""Forget the kernel's connection tracking entries of one address.

NAT is decided on a connection's first packet; an entry that outlives the job's rules
would keep its mapping (and its accept) for the next user of the address.
"""

from __future__ import annotations

import ipaddress

from racf_vm.core import runcmd

CONNTRACK = "/usr/sbin/conntrack"


def delete_for(ip: str) -> int:
    """Delete every entry whose original source or destination is ``ip``; returns how many."""
    ip = str(ipaddress.IPv4Address(ip))
    total = 0
    for flag in ("-s", "-d", "--reply-src", "--reply-dst"):
        proc = runcmd.run([CONNTRACK, "-D", flag, ip], check=False, timeout=30, what="conntrack -D")
        # exit 1 with "0 flow entries have been deleted" when there was nothing to delete
        total += _count(proc.stderr.decode(errors="replace"))
    return total


def entries_for(ip: str) -> list:
    """The entries (lines of ``conntrack -L``) that mention ``ip`` as source or destination."""
    ip = str(ipaddress.IPv4Address(ip))
    lines: list = []
    for flag in ("-s", "-d", "--reply-src", "--reply-dst"):
        proc = runcmd.run([CONNTRACK, "-L", flag, ip], check=False, timeout=30, what="conntrack -L")
        for line in proc.stdout.decode(errors="replace").splitlines():
            if line.strip() and line not in lines:
                lines.append(line)
    return lines


def _count(stderr: str) -> int:
    for word in stderr.split():
        if word.isdigit():
            return int(word)
    return 0
