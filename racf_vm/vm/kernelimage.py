"""Uncompressed kernels for faster boots under TCG.

QEMU boots an uncompressed ELF kernel through its PVH entry point, which skips SeaBIOS's
real-mode loader and the in-guest decompression: seconds per boot without KVM.
"""

import lzma

_XZ_MAGIC = b"\xfd7zXZ\x00"


def extract_vmlinux(bzimage: str, dest: str) -> bool:
    """Write the ELF kernel inside an xz-compressed bzImage to ``dest``.

    Returns False (and writes nothing) when the bzImage is not xz-compressed.
    """
    with open(bzimage, "rb") as f:
        data = f.read()
    start = data.find(_XZ_MAGIC)
    if start < 0:
        return False
    try:
        elf = lzma.LZMADecompressor().decompress(data[start:])
    except lzma.LZMAError:
        return False
    if elf[:4] != b"\x7fELF":
        return False
    with open(dest, "wb") as f:
        f.write(elf)
    return True
