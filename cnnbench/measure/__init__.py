"""The harnesses: one module per metric (``params``, ``flops``, ``shapes``, ``latency``,
``memory``, ``train``, ``roofline``), each with ``measure_unit(spec, ctx) -> typed result``;
``harnesses.py`` is the table the runner loops over; ``workload.py`` builds what every harness
measures (model, inputs, loss, optimizer, step); ``worker.py`` is the one worker-process protocol.

A measurement neither prints nor writes files; presenting is the CLI's and the reports' job.
"""
