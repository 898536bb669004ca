"""
Which binary the tests in this folder run: $HUBTWIST_BINARY, else dist/hubtwist (which
`bash tests/setup` builds with packaging/build). Without either, the test modules skip
themselves, except in CI (CI=true), where the C{binary} fixture (conftest.py) fails.
"""

from __future__ import annotations

import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_BINARY = ROOT / "dist" / "hubtwist"


def _find_binary() -> pathlib.Path | None:
    given = os.environ.get("HUBTWIST_BINARY")
    if given:
        return pathlib.Path(given).resolve()
    return DEFAULT_BINARY if DEFAULT_BINARY.exists() else None


BINARY = _find_binary()


def skip_module_without_binary() -> None:
    """Called at the top of each test module here: skip it when there is no binary (not in
    CI: there the L{binary} fixture fails instead)."""
    if BINARY is None and os.environ.get("CI") != "true":
        pytest.skip("no hubtwist binary: build it with packaging/build (or `bash tests/setup`), "
                    "or set HUBTWIST_BINARY", allow_module_level=True)


def require_binary() -> pathlib.Path:
    """The binary, for a test elsewhere that needs it: skipped without one, failed in CI."""
    if BINARY is None:
        message = ("no hubtwist binary: build it with packaging/build (or `bash tests/setup`), "
                   "or set HUBTWIST_BINARY")
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return BINARY
