"""A plugin that cannot be imported: it needs a package that is not installed."""

import cnnbench_no_such_package  # noqa: F401
