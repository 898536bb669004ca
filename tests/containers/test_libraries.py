"""
conf/container/libraries.py: the system libraries the one-file binary needs, computed from
the binary (its bootloader and the ELF files of its bundle), for a minimal image.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from tests.binary.locate import require_binary
from tests.e2e.conftest import REPO

SCRIPT = REPO / "conf" / "container" / "libraries.py"
spec = importlib.util.spec_from_file_location("container_libraries", SCRIPT)
libraries = importlib.util.module_from_spec(spec)
spec.loader.exec_module(libraries)


def test_the_bundle_is_read_from_the_binary_without_pyinstaller():
    files = libraries.bundled_files(require_binary().read_bytes())
    assert any(name.startswith("libpython3") for name in files), sorted(files)[:20]
    python_library = next(data for name, data in files.items() if name.startswith("libpython3"))
    assert python_library.startswith(b"\x7fELF")


def test_the_needed_libraries_include_what_the_bundled_libpython_links():
    needed = libraries.needed_libraries(str(require_binary()))
    names = {path.rsplit("/", 1)[1] for path in needed}
    # ldd on the bootloader alone misses libm: the bundled libpython needs it.
    assert {"libc.so.6", "libm.so.6"} <= names, needed
    assert any(name.startswith("ld-linux") for name in names), needed
    # What the bundle brings itself is not copied from the system.
    assert not names & {"libssl.so.3", "libcrypto.so.3", "libffi.so.8"}, needed
    assert all(path.startswith("/") for path in needed)


def test_a_file_without_a_bundle_is_refused_in_one_sentence(tmp_path):
    plain = tmp_path / "plain"
    plain.write_bytes(b"#!/bin/sh\necho hi\n")
    result = subprocess.run([sys.executable, str(SCRIPT), str(plain)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"libraries.py: cannot list the libraries of {plain}: "
                                     "no PyInstaller bundle in it")
