"""racf_vm.cli.progress: bars on a terminal, plain lines otherwise."""

import io

from racf_vm.cli.progress import Reporter


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_plain_lines_without_a_terminal():
    out = _Stream(tty=False)
    shown = Reporter(out)
    shown.phase("booting")
    step = shown.bar("copying img")
    for _ in range(4):
        step(1 << 20, 4 << 20)
    shown.phase("done copying")
    lines = out.getvalue().splitlines()
    assert lines[0] == "racf-vm: booting"
    assert lines[1] == "racf-vm: copying img (4.0 MiB)"
    assert lines[2].startswith("racf-vm: copying img: 4.0 MiB in ")
    assert lines[3] == "racf-vm: done copying"
    assert "\r" not in out.getvalue() and "#" not in out.getvalue()


def test_a_bar_on_a_terminal():
    out = _Stream(tty=True)
    shown = Reporter(out)
    step = shown.bar("fetching a.raw")
    step(50, 100)
    step(50, 100)
    shown.close()
    text = out.getvalue()
    assert "fetching a.raw" in text and "100%" in text
    assert "MiB in" not in text  # no closing line: the bar said it
