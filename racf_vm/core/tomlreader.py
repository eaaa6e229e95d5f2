"""Small helpers shared by the TOML readers (site config and image catalog).

tomllib reports syntax errors with a line number but forgets where each key was once it
has built the dict. Operators fixing ``/etc/racf-vm`` need "file:line: what is wrong", so
these helpers decode strictly and find a key's line again by scanning the text.
"""

import math
import os
import re
import tomllib
from typing import Any, Optional

from racf_vm.core.errors import ConfigError

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]*?)\s*\]\]?\s*(?:#.*)?$")


def decode_toml(data: bytes, source: str) -> tuple[dict, str]:
    """Parse TOML bytes into a dict; return it and the decoded text (for line lookups).

    Any decoding or syntax problem becomes a ConfigError naming ``source``.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source}: not valid UTF-8 (byte {e.start})") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: invalid TOML: {e}") from None


def _norm_header(name: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in name.split("."))


def find_line(text: str, section: Optional[str], key: str) -> Optional[int]:
    """Best-effort 1-based line of ``key`` inside table ``section`` (None = top level).

    Falls back to the first line that mentions the key as an assignment or table header
    anywhere; returns None when nothing matches (the message then has no line).
    """
    key_re = re.compile(
        r"^\s*(?:%s|\"%s\"|'%s')\s*=" % ((re.escape(key),) * 3)
    )
    current: Optional[str] = None
    fallback: Optional[int] = None
    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.match(line)
        if header:
            current = _norm_header(header.group(1))
            full = f"{section}.{key}" if section else key
            if current == full:
                return number
            continue
        if key_re.match(line):
            if current == section:
                return number
            if fallback is None:
                fallback = number
    return fallback


def where(source: str, text: str, section: Optional[str], key: str) -> str:
    """``source:line`` (or just ``source``) for error messages."""
    line = find_line(text, section, key)
    return f"{source}:{line}" if line else source


class TableReader:
    """Typed access to one TOML table that remembers which keys were consumed.

    ``finish()`` rejects every key nobody asked for, so a typo in a site file is an
    error instead of a silently ignored setting.
    """

    def __init__(self, table: Any, source: str, text: str, section: Optional[str]):
        self.source = source
        self.text = text
        self.section = section
        label = f"[{section}]" if section else "the top level"
        if table is None:
            raise ConfigError(f"{source}: missing {label} table")
        if not isinstance(table, dict):
            raise ConfigError(
                f"{where(source, text, None, section or '')}: {label} must be a table"
            )
        self.table = table
        self.seen: set[str] = set()

    def fail(self, key: str, problem: str) -> ConfigError:
        name = f"{self.section}.{key}" if self.section else key
        return ConfigError(f"{where(self.source, self.text, self.section, key)}: {name}: {problem}")

    def has(self, key: str) -> bool:
        return key in self.table

    def raw(self, key: str, default: Any) -> Any:
        self.seen.add(key)
        return self.table.get(key, default)

    def string(self, key: str, default: str, *, pattern: Optional[str] = None,
               max_len: int = 4096, allow_empty: bool = True) -> str:
        value = self.raw(key, default)
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, not {type(value).__name__}")
        if not allow_empty and not value:
            raise self.fail(key, "must not be empty")
        if len(value) > max_len:
            raise self.fail(key, f"longer than {max_len} characters")
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise self.fail(key, "contains control characters")
        if pattern is not None and value and not re.fullmatch(pattern, value):
            raise self.fail(key, f"{value!r} does not match {pattern}")
        return value

    def strings(self, key: str, default: tuple[str, ...], *, max_items: int = 64,
                max_len: int = 4096) -> tuple[str, ...]:
        """A list of strings (no control characters), as a tuple."""
        value = self.raw(key, default)
        if not isinstance(value, (list, tuple)):
            raise self.fail(key, f"must be a list of strings, not {type(value).__name__}")
        if len(value) > max_items:
            raise self.fail(key, f"more than {max_items} entries")
        for item in value:
            if not isinstance(item, str):
                raise self.fail(key, f"must hold strings only, not {type(item).__name__}")
            if len(item) > max_len or any(ord(c) < 32 or ord(c) == 127 for c in item):
                raise self.fail(key, "an entry is too long or contains control characters")
        return tuple(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, not {type(value).__name__}")
        return value

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.string(key, default)
        if value not in choices:
            raise self.fail(key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def path(self, key: str, default: str) -> str:
        value = self.string(key, default, allow_empty=False)
        if not value.startswith("/"):
            raise self.fail(key, f"{value!r} is not an absolute path")
        if ".." in value.split("/"):
            raise self.fail(key, f"{value!r} contains a '..' component")
        return os.path.normpath(value)

    def integer(self, key: str, default: int, *, minimum: int = 0,
                maximum: int = 2**53) -> int:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer, not {type(value).__name__}")
        if not minimum <= value <= maximum:
            raise self.fail(key, f"{value} is outside {minimum}..{maximum}")
        return value

    def seconds(self, key: str, default: float) -> float:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"must be a number of seconds, not {type(value).__name__}")
        value = float(value)
        if not math.isfinite(value) or value <= 0 or value > 10 * 365 * 86400:
            raise self.fail(key, f"{value} is not a positive finite number of seconds")
        return value

    def finish(self) -> None:
        for key in self.table:
            if key not in self.seen:
                where_ = f"[{self.section}]" if self.section else "the top level"
                raise self.fail(key, f"unknown key in {where_}")
