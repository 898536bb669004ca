"""Shared test helpers. Never import twisted.internet.reactor at module level here:
pytest-twisted installs the reactor itself (see ../shared notes on pytest-twisted)."""

import os

# CI runs the tests as root, in a container: hubtwist would refuse to run the test apps as
# root (or become the image's uid 1000). Tests of that behaviour take the variable out.
os.environ["HUBTWIST_ALLOW_ROOT"] = "1"
