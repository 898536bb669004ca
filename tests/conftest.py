"""Shared test helpers. Never import twisted.internet.reactor at module level here:
pytest-twisted installs the reactor itself (see ../shared notes on pytest-twisted)."""
