"""HTCondor configuration as data, for tests (no HTCondor can be installed here).

``parse`` reads the subset of the configuration language racf-vm prints and refuses
everything else (HTCondor's "Introduction to Configuration": ``NAME = value``, ``#``
comment lines, ``\\`` continuation, ``NAME @=tag`` ... ``@tag`` multi-line values);
``expand`` applies ``$(NAME)`` / ``$(NAME:default)`` as HTCondor does (a self-reference is
expanded at once with the earlier value, other references with the final one) and
refuses references to names nobody defines. ``installed_paths`` reads what the Makefile's
install target installs from ``make -n install`` (a dry run: nothing is executed).
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_ASSIGN = re.compile(r"^([^=\s@]+)\s*=\s?(.*)$")
_MULTI = re.compile(r"^([^=\s@]+)\s*@=(\S+)\s*$")
_REF = re.compile(r"\$\(([^()]*)\)")

# What an unmodified HTCondor 24/25 gives the names racf-vm's configuration builds on.
HTCONDOR_DEFAULTS = {
    "STARTD_CRON_JOBLIST": "",
    "STARTD_ATTRS": "",
    "FILETRANSFER_PLUGINS": "/usr/libexec/condor/curl_plugin, /usr/libexec/condor/data_plugin",
    "DAEMON_LIST": "MASTER, SCHEDD",
    "JOB_ROUTER_ROUTE_NAMES": "",
    "DETECTED_CPUS": "2",
    "DETECTED_MEMORY": "24000",
}


class ConfigSyntaxError(ValueError):
    pass


def parse(text: str) -> list[tuple[str, str]]:
    """(name, raw value) per assignment, in order; ConfigSyntaxError for anything else."""
    entries: list[tuple[str, str]] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = _MULTI.match(stripped)
        if m:
            name, tag = m.groups()
            body = []
            while i < len(lines) and lines[i].strip() != f"@{tag}":
                body.append(lines[i].strip())
                i += 1
            if i >= len(lines):
                raise ConfigSyntaxError(f"{name}: no closing @{tag}")
            i += 1
            entries.append((_name(name), "\n".join(body)))
            continue
        while stripped.endswith("\\"):  # continuation; comment lines inside are skipped
            if i >= len(lines):
                raise ConfigSyntaxError(f"continuation at the end: {line!r}")
            nxt = lines[i].strip()
            i += 1
            if nxt.startswith("#"):
                nxt = "\\"
            stripped = stripped[:-1].rstrip() + " " + nxt if nxt != "\\" else stripped
        m = _ASSIGN.match(stripped)
        if not m:
            raise ConfigSyntaxError(f"not an assignment: {stripped!r}")
        entries.append((_name(m.group(1)), m.group(2).strip()))
    return entries


def _name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise ConfigSyntaxError(f"bad name {name!r}")
    return name


def _substitute(value: str, lookup) -> str:
    def one(m: re.Match) -> str:
        name, _, default = m.group(1).partition(":")
        if not NAME_RE.fullmatch(name):
            raise ConfigSyntaxError(f"bad reference $({m.group(1)})")
        got = lookup(name.upper())
        if got is None:
            if m.group(1).count(":"):
                return default
            raise ConfigSyntaxError(f"$({name}) is defined nowhere")
        return got

    for _ in range(20):
        new = _REF.sub(one, value)
        if new == value:
            break
        value = new
    if re.search(r"\$[A-Za-z]*\(", value):
        raise ConfigSyntaxError(f"unexpanded function or reference in {value!r}")
    return value


def expand(entries: list[tuple[str, str]], defaults: dict = HTCONDOR_DEFAULTS) -> dict[str, str]:
    """Final values (names upper-cased, as HTCondor's are case-insensitive)."""
    base = {k.upper(): v for k, v in defaults.items()}
    raw: dict[str, str] = {}
    for name, value in entries:
        key = name.upper()
        earlier = raw.get(key, base.get(key))
        value = re.sub(r"\$\(%s\)" % re.escape(name), lambda _: earlier if earlier is not None
                       else "", value, flags=re.IGNORECASE)
        raw[key] = value
    merged = {**base, **raw}
    return {k: _substitute(v, merged.get) for k, v in raw.items()}


# -- what `make install` installs ------------------------------------------------------

def _operands(tokens: list[str]) -> tuple[bool, list[str]]:
    directory, out, skip = False, [], False
    for t in tokens[1:]:
        if skip:
            skip = False
        elif t in ("-o", "-g", "-m"):
            skip = True
        elif t == "-d":
            directory = True
        elif not t.startswith("-"):
            out.append(t)
    return directory, out


def installed_paths(repo: Path) -> tuple[set[str], dict[str, str]]:
    """Paths `make install` creates (files and directories) and its symlinks (dest ->
    target), read from the dry run of the install target."""
    out = subprocess.run(["make", "--no-print-directory", "-n", "install"], cwd=repo,
                         capture_output=True, text=True, check=True, timeout=60).stdout
    paths: set[str] = set()
    links: dict[str, str] = {}
    for line in out.replace("\\\n", " ").splitlines():
        for cmd in re.split(r";|&&|\|\||\b(?:then|else|do|fi|done)\b", line):
            try:
                tokens = shlex.split(cmd)
            except ValueError:
                continue
            if not tokens or "$" in cmd:
                continue  # a shell loop's variable: not one of ours
            if tokens[0] == "install":
                directory, ops = _operands(tokens)
                if directory:
                    paths.update(os.path.normpath(p) for p in ops)
                elif len(ops) >= 2:
                    *sources, dest = ops
                    files = [f for s in sources for f in (glob.glob(str(repo / s)) or [s])]
                    if len(files) == 1 and not dest.endswith("/"):
                        paths.add(os.path.normpath(dest))
                    else:
                        paths.update(os.path.join(dest, os.path.basename(f)) for f in files)
            elif tokens[0] == "ln" and len(tokens) >= 3:
                links[tokens[-1]] = tokens[-2]
                paths.add(tokens[-1])
    return paths, links


def venv_scripts(repo: Path, venv: str = "/opt/racf-vm/venv") -> dict[str, str]:
    """``pip install .`` puts these console scripts into the venv: path -> entry point."""
    scripts = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["scripts"]
    return {f"{venv}/bin/{name}": target for name, target in scripts.items()}
