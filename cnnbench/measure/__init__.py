"""The harnesses: one module per metric, each exposing ``measure(model, spec) -> record``.

A measurement neither prints nor writes files; presenting is the CLI's and the reports' job.
"""
