#!/usr/bin/env python3
"""
The system's shared libraries the one-file hubtwist binary needs at run time, one path a
line: what the bootloader links (`ldd BINARY`) and what the libraries and extension
modules bundled inside it link but do not bring (libm for the bundled libpython, for
example), computed with `ldd` on each ELF file of the bundle. conf/container/build-image
copies exactly these (and the dynamic loader) into a minimal image.

Usage: libraries.py BINARY. Needs only Python 3 and ldd (glibc's), not PyInstaller: the
bundle (PyInstaller's CArchive, appended to the bootloader) is read here directly.
Exits 2 with one sentence when BINARY is not a PyInstaller one-file binary.
"""

from __future__ import annotations

import os
import pathlib
import re
import struct
import subprocess
import sys
import tempfile
import zlib

# PyInstaller's CArchive (PyInstaller/archive/readers.py): a cookie at the end of the
# file points at a table of contents; each entry says where its data lies, compressed or not.
COOKIE_MAGIC = b"MEI\014\013\012\013\016"
COOKIE = struct.Struct("!8sIIII64s")  # magic, package length, toc offset, toc length, ...
ENTRY = struct.Struct("!IIIIBc")      # entry length, offset, length, uncompressed, flag, type
ELF_MAGIC = b"\x7fELF"


def bundled_files(binary: bytes) -> dict[str, bytes]:
    """The files of the one-file bundle in C{binary}, by their name in the bundle.
    C{ValueError} when there is no bundle."""
    at = binary.rfind(COOKIE_MAGIC)
    if at < 0:
        raise ValueError("no PyInstaller bundle in it")
    _, package_length, toc_offset, toc_length, _, _ = COOKIE.unpack_from(binary, at)
    start = at + COOKIE.size - package_length
    files = {}
    position = start + toc_offset
    end = position + toc_length
    while position < end:
        length, offset, size, _, compressed, _ = ENTRY.unpack_from(binary, position)
        name = binary[position + ENTRY.size:position + length].rstrip(b"\0").decode()
        data = binary[start + offset:start + offset + size]
        files[name] = zlib.decompress(data) if compressed else data
        position += length
    return files


def ldd(path: str, library_path: str | None = None) -> list[str]:
    """The libraries C{path} resolves to (absolute paths, the loader included), as ldd
    prints them; C{library_path} is searched first, as the bootloader's unpacked
    directory is at run time. A missing library raises C{LookupError}."""
    env = dict(os.environ)
    if library_path:
        env["LD_LIBRARY_PATH"] = library_path
    output = subprocess.run(["ldd", path], capture_output=True, text=True, env=env).stdout
    found = []
    for line in output.splitlines():
        if "not found" in line:
            raise LookupError(f"{path}: {line.strip()}")
        match = re.search(r"(/\S+) \(0x", line)  # "name => /path (0x..)" or "/lib64/ld... (0x..)"
        if match:
            found.append(match.group(1))
    return found


def needed_libraries(binary_path: str) -> list[str]:
    """The system libraries (outside the bundle) the binary and its bundle link, sorted."""
    with open(binary_path, "rb") as file:
        contents = file.read()
    needed = set(ldd(binary_path))
    with tempfile.TemporaryDirectory() as unpacked:
        for name, data in bundled_files(contents).items():
            if not data.startswith(ELF_MAGIC):
                continue
            target = pathlib.Path(unpacked, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(0o755)
        for elf in pathlib.Path(unpacked).rglob("*"):
            if elf.is_file():
                needed |= {lib for lib in ldd(str(elf), unpacked)
                           if not lib.startswith(unpacked + "/")}
    return sorted(needed)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} BINARY", file=sys.stderr)
        return 2
    try:
        libraries = needed_libraries(argv[1])
    except (OSError, ValueError, LookupError) as error:
        print(f"libraries.py: cannot list the libraries of {argv[1]}: {error}", file=sys.stderr)
        return 2
    print("\n".join(libraries))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
