"""How the suite shares the machine, for tests/ and benchmarks/ alike.

- ``-n auto`` (pyproject's addopts) runs tests in pytest-xdist workers, one per core, when
  benchmarks are not being timed (``--benchmark-disable``, the README's test command, or
  ``--benchmark-skip``). When they are (``pytest --benchmark-only``, or plain ``pytest``) the run
  stays in one process: timings taken beside other tests would measure the neighbours, and
  pytest-benchmark refuses to time under xdist anyway. ``PYTEST_XDIST_AUTO_NUM_WORKERS`` or an
  explicit ``-n N`` overrides the choice.
- A parallel worker runs torch on one thread (``OMP_NUM_THREADS=1``, inherited by the processes
  its tests start): N workers then fill N cores instead of fighting over them.
- ``@pytest.mark.serial`` marks a test that times something or needs the machine to itself. Such
  tests run in one xdist group, last, alone: a reader-writer lock across the workers lets every
  other test run beside every other, and a serial test only when none is running (its fixtures'
  setup and teardown included). A serial test gets every core back for torch in this process.
  Last, because at the start the other workers would begin long tests (a shared run) that the
  serial group would then wait for.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time

import pytest

SERIAL_GROUP = "serial"
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER:  # before anything imports torch: the threads of this worker and its children
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _benchmarks_timed(config: pytest.Config) -> bool:
    disabled = config.getoption("benchmark_disable", False) and not config.getoption(
        "benchmark_enable", False
    )
    return not (disabled or config.getoption("benchmark_skip", False))


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    given = os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS")
    if given:
        return int(given)
    if _benchmarks_timed(config):
        return 0
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:  # one group: the serial tests run one after another on one worker
        if item.get_closest_marker("serial"):
            item.add_marker(pytest.mark.xdist_group(SERIAL_GROUP))


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class SerialLast(LoadGroupScheduling):
        """loadgroup, except that the serial group is handed out only when nothing else is left."""

        def _assign_work_unit(self, node) -> None:
            if SERIAL_GROUP in self.workqueue and len(self.workqueue) > 1:
                self.workqueue.move_to_end(SERIAL_GROUP)
            super()._assign_work_unit(node)

    return SerialLast(config, log)


class _MachineLock:
    """A reader-writer lock over the xdist workers of one run, by ``flock``: parallel tests hold
    it shared, a serial test exclusively. A serial test first takes the gate, so that no new
    parallel test starts while it waits for the running ones to end; a parallel test passes the
    gate only on its way in."""

    def __init__(self, run_id: str):
        base = os.path.join(tempfile.gettempdir(), f"cnnbench-pytest-{run_id}")
        self._gate = open(base + ".gate", "a+")  # noqa: SIM115 - held for the whole session
        self._share = open(base + ".share", "a+")  # noqa: SIM115

    @contextlib.contextmanager
    def held(self, exclusive: bool):
        fcntl.flock(self._gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(self._share, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            if not exclusive:
                fcntl.flock(self._gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(self._share, fcntl.LOCK_UN)
            if exclusive:
                fcntl.flock(self._gate, fcntl.LOCK_UN)


_lock: _MachineLock | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _lock
    # a worker of this session, not a pytest that a test started (it inherits the variables)
    run_id = getattr(config, "workerinput", {}).get("testrunuid")
    if run_id:
        _lock = _MachineLock(run_id)


@contextlib.contextmanager
def _all_cores():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


QUIET_SHARE = 0.10  # other processes' share of the machine below which a serial test starts
QUIET_WAIT_S = 10.0


def _wait_for_quiet() -> None:
    """Until other processes use under ``QUIET_SHARE`` of the machine for 0.2 s (at most
    ``QUIET_WAIT_S``). The lock keeps other tests out, but not what runs outside a test: a worker
    that ran out of tests exits while the serial group starts (its interpreter and torch
    teardown took one core for about a second, and a contention test read it as noise)."""
    from cnnbench.measure.latency import CpuContention

    deadline = time.monotonic() + QUIET_WAIT_S
    while time.monotonic() < deadline:
        with CpuContention() as window:
            time.sleep(0.2)
        if window.other_share < QUIET_SHARE:
            return


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    serial = item.get_closest_marker("serial") is not None
    with contextlib.ExitStack() as stack:
        if _lock is not None:
            stack.enter_context(_lock.held(exclusive=serial))
            if serial:
                stack.enter_context(_all_cores())
                _wait_for_quiet()
        yield
