"""ClassAds on the stdin and stdout of the HTCondor-facing tools (hooks, plugin, router,
LIBVIRT_XML_SCRIPT), always through classad2.

Input is capped, must be UTF-8 without NUL, and is parsed by classad2; a line that looks
like an attribute but did not make it into the ad (classad2 stops quietly at the first
line it cannot parse) refuses the whole ad rather than acting on part of it. Output is
old ClassAd syntax, one ``Attr = value`` per line, written by classad2 from typed values;
a string value with a line break (which old syntax cannot carry) is refused.
"""

from __future__ import annotations

import re
import sys
from typing import Any, BinaryIO, Mapping, Optional

from racf_vm.core.errors import UsageError

_ATTR_LINE = re.compile(r"^[ \t]*([A-Za-z_][A-Za-z0-9_.]*)[ \t]*=", re.MULTILINE)
ROUTER_SEPARATOR = "------"


def read_stream(stream: BinaryIO, limit: int, what: str) -> str:
    """All of ``stream`` (at most ``limit`` bytes) as text, or UsageError."""
    chunks, size = [], 0
    while True:
        chunk = stream.read(min(1 << 16, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise UsageError(f"{what} is larger than the limit of {limit} bytes")
    try:
        text = b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{what} is not valid UTF-8") from None
    if "\0" in text:
        raise UsageError(f"{what} contains a NUL byte")
    return text


def read_stdin(limit: int, what: str) -> str:
    return read_stream(sys.stdin.buffer, limit, what)


def parse_old_ad(text: str, what: str):
    """One ad in old (line) syntax; every ``Name =`` line must have made it in."""
    import classad2  # a C extension: loaded only when an ad is read

    if not text.strip():
        raise UsageError(f"{what} is empty")
    try:
        ad = classad2.parseOne(text, classad2.ParserType.Old)
    except Exception as exc:  # the bindings raise several types; all mean "bad ad"
        raise UsageError(f"cannot parse {what}: {str(exc)[:200]}") from None
    keys = {k.lower() for k in ad.keys()}
    for m in _ATTR_LINE.finditer(text):
        if m.group(1).lower() not in keys:
            line = text.count("\n", 0, m.start()) + 1
            raise UsageError(f"cannot parse {what} at line {line} ({m.group(1)[:60]})")
    return ad


def split_router_input(text: str, what: str) -> tuple[str, str]:
    """A JobRouter hook's stdin: the first ad, a line ``------``, the second ad."""
    lines = text.split("\n")
    marks = [i for i, line in enumerate(lines) if line.strip() == ROUTER_SEPARATOR]
    if len(marks) != 1:
        raise UsageError(f"{what}: expected two ads separated by a line {ROUTER_SEPARATOR}")
    i = marks[0]
    return "\n".join(lines[:i]), "\n".join(lines[i + 1:])


def lookup(ad, name: str) -> Any:
    """An attribute's literal value (str, int, bool, float, ExprTree...) without
    evaluating anything; None when absent or not representable."""
    try:
        return ad[name]
    except KeyError:
        return None
    except Exception:  # a value the bindings cannot convert is as good as absent
        return None


def lookup_str(ad, name: str) -> Optional[str]:
    value = lookup(ad, name)
    return value if isinstance(value, str) else None


def lookup_int(ad, name: str) -> Optional[int]:
    value = lookup(ad, name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check_printable(name: str, value: Any) -> None:
    """Old ClassAd syntax cannot carry a line break inside a string."""
    if isinstance(value, str) and ("\n" in value or "\r" in value):
        raise UsageError(f"{name} would hold a line break, which a ClassAd line cannot carry")


def format_ad(values: Mapping[str, Any]) -> str:
    """``values`` (str, int, bool, classad2.ExprTree) as old-syntax lines, by classad2."""
    import classad2

    ad = classad2.ClassAd()
    for name, value in values.items():
        check_printable(name, value)
        ad[name] = value
    return ad.printOld()


def format_whole_ad(ad) -> str:
    """A complete ad (a classad2.ClassAd) in old syntax."""
    for name in ad.keys():
        check_printable(name, lookup(ad, name))
    return ad.printOld()
