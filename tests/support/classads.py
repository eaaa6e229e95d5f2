"""Reading what racf-vm prints for HTCondor back with classad2."""

import classad2


def parse_cron(text: str) -> list:
    """The ads of a STARTD_CRON job's output: ``Attr = value`` lines, each ad ended by a
    line starting with ``-`` (htcondor.md §6); the output must end with one."""
    assert text.endswith("\n-\n"), f"not ended by a '-' line: {text[-80:]!r}"
    ads, current = [], []
    for line in text.splitlines():
        if line.startswith("-"):
            ads.append(classad2.parseOne("\n".join(current)))
            current = []
        else:
            current.append(line)
    return ads
