"""Starting a pytest from inside a test: a child of an xdist worker inherits the worker's
``PYTEST_XDIST_*`` variables, and pytest-benchmark reads ``PYTEST_XDIST_WORKER`` as "running under
xdist" and then refuses to time (``--benchmark-only`` would end with exit status 4)."""

from __future__ import annotations

import os
import sys

COMMAND = (sys.executable, "-m", "pytest")


def environment() -> dict[str, str]:
    """This process's environment without what marks it as an xdist worker or a running test."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("PYTEST_XDIST_") and k != "PYTEST_CURRENT_TEST"}  # fmt: skip
