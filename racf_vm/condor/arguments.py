"""HTCondor argument strings (the ``VM_Args`` job attribute) to an argv list.

Users already know HTCondor's ``arguments`` syntax, so ``+VM_Args`` follows it:

* V1 ("old", raw form as stored in a job ad): arguments are separated by whitespace and
  every other character is literal; there is no quoting at all (the submit-file escape
  ``\\"`` has already been undone by the ClassAd string syntax by the time we see it).
* V2 ("new"): the whole value is enclosed in double quotes (leading and trailing
  whitespace allowed). Inside, ``""`` is a literal ``"``; whitespace separates
  arguments; single quotes group text (whitespace included) into one argument, ``''``
  inside single quotes is a literal ``'``, and ``''`` on its own is an empty argument.
  Backslashes are literal.

The value is detected as V2 when its first non-whitespace character is ``"``, as HTCondor
does. Nothing here evaluates or expands anything: the result is data for the guest.
"""

from racf_vm.core.errors import UsageError

_WS = " \t\n\r\v\f"


def is_v2(value: str) -> bool:
    """True when ``value`` uses the V2 (double-quoted) syntax."""
    return value.lstrip(_WS).startswith('"')


def _unquote_v2(value: str) -> str:
    """Strip the outer double quotes of a V2 value and undo ``""``."""
    text = value.lstrip(_WS)
    out = []
    i = 1
    while i < len(text):
        c = text[i]
        if c == '"':
            if text.startswith('"', i + 1):
                out.append('"')
                i += 2
                continue
            rest = text[i + 1:]
            if rest.strip(_WS):
                raise UsageError(
                    "VM_Args: text after the closing double quote "
                    f"({rest.strip(_WS)[:40]!r}); write a literal \" as \"\""
                )
            return "".join(out)
        out.append(c)
        i += 1
    raise UsageError('VM_Args: unbalanced double quote (a V2 value must end with ")')


def _split_v2_raw(raw: str) -> list[str]:
    args: list[str] = []
    current: list[str] = []
    in_token = False
    i = 0
    n = len(raw)
    while i < n:
        c = raw[i]
        if c in _WS:
            if in_token:
                args.append("".join(current))
                current = []
                in_token = False
            i += 1
        elif c == "'":
            in_token = True
            i += 1
            while True:
                if i >= n:
                    raise UsageError(
                        "VM_Args: unbalanced single quote (write a literal ' inside "
                        "single quotes as '')"
                    )
                if raw[i] == "'":
                    if raw.startswith("'", i + 1):
                        current.append("'")
                        i += 2
                        continue
                    i += 1
                    break
                current.append(raw[i])
                i += 1
        else:
            in_token = True
            current.append(c)
            i += 1
    if in_token:
        args.append("".join(current))
    return args


def parse_args(value: str) -> list[str]:
    """Split an HTCondor arguments string (V1 or V2) into a list of arguments.

    Raises UsageError on unbalanced quotes and on NUL characters (which no argv can hold).
    """
    if not isinstance(value, str):
        raise UsageError("VM_Args must be a string")
    if "\0" in value:
        raise UsageError("VM_Args contains a NUL character")
    if is_v2(value):
        return _split_v2_raw(_unquote_v2(value))
    return _split_ws(value)


def _split_ws(value: str) -> list[str]:
    out: list[str] = []
    current: list[str] = []
    for c in value:
        if c in _WS:
            if current:
                out.append("".join(current))
                current = []
        else:
            current.append(c)
    if current:
        out.append("".join(current))
    return out


def parse_ad_arguments(v2_raw: object, v1: object) -> list[str]:
    """A job ad's own arguments as a list: ``Arguments`` holds the V2 syntax without its
    outer double quotes (a literal ``"`` is just ``"`` there), ``Args`` the V1 syntax of
    older submit files; ``Arguments`` wins, as in HTCondor. Non-strings are refused."""
    for value in (v2_raw, v1):
        if value is not None and not isinstance(value, str):
            raise UsageError("the job's Arguments/Args must be a string")
        if isinstance(value, str) and "\0" in value:
            raise UsageError("the job's arguments contain a NUL character")
    if isinstance(v2_raw, str):
        return _split_v2_raw(v2_raw)
    if isinstance(v1, str):
        return _split_ws(v1)
    return []


def quote_v2(args: list[str]) -> str:
    """The V2 string that ``parse_args`` turns back into ``args`` (VM_Args of a job the
    hooks rewrite; tests and docs)."""
    parts = []
    for a in args:
        if a == "" or any(c in _WS or c == "'" for c in a):
            parts.append("'" + a.replace("'", "''") + "'")
        else:
            parts.append(a)
    return '"' + " ".join(parts).replace('"', '""') + '"'
