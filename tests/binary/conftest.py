"""The C{binary} fixture: the path of the hubtwist binary under test (see locate.py)."""

from __future__ import annotations

import os

import pytest

from tests.binary.locate import BINARY, DEFAULT_BINARY


@pytest.fixture(scope="session")
def binary() -> str:
    """The binary's path; fails the test when it is missing in CI or not executable."""
    if BINARY is None:
        pytest.fail(f"CI=true but there is no binary at {DEFAULT_BINARY} (tests/setup builds "
                    "it with packaging/build) and HUBTWIST_BINARY is not set", pytrace=False)
    if not (BINARY.is_file() and os.access(BINARY, os.X_OK)):
        pytest.fail(f"{BINARY} is not an executable file", pytrace=False)
    return str(BINARY)
