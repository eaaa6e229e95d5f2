"""``racf-vm-transfer``: the file-transfer plugin for ``racfimg://NAME`` URLs (htcondor.md §7,
docs/apis/file-transfer-plugins).

    racf-vm-transfer [--config PATH] -classad                       the plugin's ad
    racf-vm-transfer [--config PATH] racfimg://NAME DEST             protocol 1: one file
    racf-vm-transfer [--config PATH] -infile IN -outfile OUT [-upload]   protocol 2

Each transfer makes DEST, in the job's sandbox, a qcow2 overlay on the catalog image NAME
(racf_vm.condor.staging). The plugin runs as the job's user, so it cannot write the
root-owned node cache: it only uses an image already cached and verified there, and
reports a TransferError naming the image otherwise. Uploads are refused (an image is
input only).

Protocol 2: the input file holds new-syntax ads with ``URL`` and ``LocalFileName`` (others
ignored); the output file gets one ad per input ad, in order, each written as soon as its
transfer ends (``TransferFileName``, ``TransferURL``, ``TransferSuccess``, and
``TransferError`` or ``TransferTotalBytes``). HTCondor pre-allocates the output file: it is
written from its start and never truncated. The exit status is 0 only when every
transfer succeeded.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlsplit

from racf_vm.condor import adio, staging, tools
from racf_vm.config import LimitsConfig
from racf_vm.core.errors import RacfError, UsageError
from racf_vm.images.catalog import validate_image_name

SCHEME = "racfimg"
PLUGIN_VERSION = "racf-vm 1"
MAX_INFILE_BYTES = LimitsConfig.max_job_ad_bytes
USAGE = ("usage: racf-vm-transfer [--config PATH] -classad | racfimg://NAME DEST | "
         "-infile IN -outfile OUT [-upload]")


def plugin_ad() -> dict:
    """The query ad (``-classad``): protocol 2, our scheme."""
    return {"MultipleFileSupport": True, "PluginVersion": PLUGIN_VERSION,
            "PluginType": "FileTransfer", "ProtocolVersion": 2, "SupportedMethods": SCHEME}


def image_of_url(url: object) -> str:
    """NAME of ``racfimg://NAME`` (nothing else: no path, query, user or port)."""
    if not isinstance(url, str):
        raise UsageError("the URL must be a string")
    parts = urlsplit(url)
    if parts.scheme != SCHEME or parts.path not in ("", "/") or parts.query or parts.fragment \
            or "@" in parts.netloc or ":" in parts.netloc:
        raise UsageError(f"{url!r:.120} is not a {SCHEME}://NAME URL")
    return validate_image_name(parts.netloc)


@dataclass(frozen=True)
class Result:
    url: str
    local: str
    error: Optional[str] = None
    size: int = 0

    def ad(self) -> dict:
        out = {"TransferFileName": self.local, "TransferURL": self.url,
               "TransferSuccess": self.error is None}
        if self.error is None:
            out["TransferTotalBytes"] = self.size
        else:
            out["TransferError"] = " ".join(self.error.split())
        return out


def stage(config, url: str, local: str) -> int:
    """Make ``local`` the overlay ``url`` names; its size."""
    if not isinstance(local, str) or not os.path.isabs(local):
        raise UsageError(f"the local file name {local!r:.120} is not an absolute path")
    return staging.make_overlay(local, staging.verified_image(config, image_of_url(url)))


def transfer_one(config, url: str, local: str) -> Result:
    """One URL to one local file; a failure is a Result, not an exception."""
    try:
        return Result(url, local, size=stage(config, url, local))
    except RacfError as exc:
        return Result(url, local, error=f"racf-vm: {exc.message}")


def read_requests(path: str) -> list[tuple[str, str]]:
    """(URL, LocalFileName) of every input ad that has both (others are ignored)."""
    import classad2

    text = adio.read_stream(open(path, "rb"), MAX_INFILE_BYTES, "the -infile")
    try:
        ads = list(classad2.parseAds(text, classad2.ParserType.New))
    except Exception as exc:  # the bindings raise several types; all mean "bad input"
        raise UsageError(f"cannot parse the -infile: {str(exc)[:200]}") from None
    out = []
    for ad in ads:
        url, local = adio.lookup(ad, "URL"), adio.lookup(ad, "LocalFileName")
        if url is None and local is None:
            continue  # protocol 4 style job-level ads carry neither
        out.append((url if isinstance(url, str) else "", local if isinstance(local, str) else ""))
    return out


def new_syntax(values: dict) -> bytes:
    import classad2

    ad = classad2.ClassAd()
    for name, value in values.items():
        ad[name] = value
    return (str(ad).strip() + "\n").encode()


class OutFile:
    """The pre-allocated output file: written from its start, never truncated."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)

    def write(self, values: dict) -> None:
        data = new_syntax(values)
        while data:
            data = data[os.write(self.fd, data):]
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def run_protocol2(config_path: str, infile: str, outfile: str, upload: bool) -> int:
    out = OutFile(outfile)
    try:
        requests = read_requests(infile)
        config = None
        failed = 0
        for url, local in requests:
            if upload:
                result = Result(url, local, error=f"racf-vm: {SCHEME}:// URLs are input only "
                                                  "(a VM image is never uploaded)")
            else:
                if config is None:
                    config = tools.load_config(config_path)
                result = transfer_one(config, url, local)
            out.write(result.ad())
            failed += result.error is not None
        return 1 if failed else 0
    finally:
        out.close()


def parse_protocol2(rest: list[str]) -> tuple[str, str, bool]:
    """(infile, outfile, upload) from ``-infile IN -outfile OUT [-upload]``, in any order."""
    opts: dict = {}
    upload = False
    args = iter(rest)
    for arg in args:
        if arg == "-upload":
            upload = True
        elif arg in ("-infile", "-outfile") and arg not in opts:
            opts[arg] = next(args, None)
        else:
            raise UsageError(USAGE)
    if None in opts.values() or set(opts) != {"-infile", "-outfile"}:
        raise UsageError(USAGE)
    return opts["-infile"], opts["-outfile"], upload


def main(argv: Optional[list[str]] = None) -> int:
    def body() -> int:
        config_path, rest = tools.split_config_option(list(sys.argv[1:] if argv is None else argv))
        if rest == ["-classad"]:
            sys.stdout.write(adio.format_ad(plugin_ad()))
            return 0
        if len(rest) == 2 and not rest[0].startswith("-"):
            stage(tools.load_config(config_path), rest[0], rest[1])
            return 0
        return run_protocol2(config_path, *parse_protocol2(rest))

    return tools.run_tool(body)
