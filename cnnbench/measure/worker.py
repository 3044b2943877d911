"""The one worker protocol: a function run in a fresh process, what it emits streamed back to the
parent, its exception, its death or its silence past a time limit reported as one line.

Workers are forked from a ``forkserver`` that imported torch and the harnesses once and never ran
an operator: each worker starts with fresh allocator, thread-pool, oneDNN and CUDA state, like a
``spawn``, in ~0.03 s instead of the ~2 s a spawn spends importing torch again (a default CPU run
starts about twenty workers). The server keeps the environment it started with, so each worker
takes the parent's current ``os.environ`` first (``$CNNBENCH_PLUGINS``, ``$CUDA_VISIBLE_DEVICES``
set later still count). Where there is no forkserver (Windows), workers are spawned.

The runner measures each model in such a worker (allocator state, cuDNN/oneDNN caches and
resident memory of one model cannot change another's numbers), and the CPU memory harness gets
one of its own for each peak-RSS measurement (the peak of a process that did nothing else).

The parent never waits forever: every wait for a worker's next event has a time limit (given per
call, else the innermost :func:`time_limit` block's, else :data:`DEFAULT_LIMIT_S`); a worker that
stays silent past it (a hung CUDA call, a runaway unit) is killed and reported as timed out.
"""

from __future__ import annotations

import contextlib
import contextvars
import multiprocessing as mp
import os
import queue as queue_mod
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from ._device import is_oom

__all__ = ["DEFAULT_LIMIT_S", "WorkerError", "error_line", "is_out_of_memory", "run_in_worker",
           "call_in_worker", "start_server", "time_limit"]  # fmt: skip

# the longest any wait for a worker lasts when nobody set a limit: no wait is forever
DEFAULT_LIMIT_S = 3600.0
# CUDA allocation failures that surface as library errors rather than torch.OutOfMemoryError:
def error_line(exc: BaseException) -> str:
    """An exception as one line of at most 500 characters: what a record's reason holds."""
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:500]


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` means the device (or a cap) ran out of memory: what ``_device.is_oom``
    says (torch's out-of-memory errors and the cuBLAS/cuDNN allocation failures), or a Python
    ``MemoryError``; a sweep ends there rather than recording a broken measurement."""
    return is_oom(exc) or isinstance(exc, MemoryError)


class WorkerError(RuntimeError):
    """The worker's function raised (``oom`` says whether it ran out of memory), it died, or it
    ran past its time limit (``timed_out_s`` holds the limit)."""

    def __init__(self, line: str, *, oom: bool = False, remote_traceback: str = "",
                 timed_out_s: float | None = None):  # fmt: skip
        super().__init__(line)
        self.oom = oom
        self.remote_traceback = remote_traceback
        self.timed_out_s = timed_out_s


# imported once by the forkserver; none of them touches a device at import time. What a worker
# runs, and "__main__": the script that started the run (the ``cnnbench`` console script), which
# a worker would otherwise run again as ``__mp_main__`` at every start (~25 ms: it imports
# cnnbench.cli, which keeps rich and the report out of its imports for that). A ``python -m``
# main module is never run again by a worker, and multiprocessing skips this entry for it.
# torch._dynamo: the first operator on the meta device imports it (torch._refs' wrappers), and
# every run's size check and plan count on the meta device in a worker (~2 s each time otherwise)
_PRELOAD = ["__main__", "torch", "torch._dynamo", "torchvision", "cnnbench.measure.harnesses",
            "cnnbench.runner"]  # fmt: skip
_context = None
_limit: contextvars.ContextVar[float | None] = contextvars.ContextVar("cnnbench_limit", default=None)


def _mp_context():
    global _context
    if _context is None:
        if "forkserver" in mp.get_all_start_methods():
            _context = mp.get_context("forkserver")
            _context.set_forkserver_preload(_PRELOAD)
            _start_helpers()
        else:
            _context = mp.get_context("spawn")
    return _context


def start_server() -> None:
    """Start the forkserver now, so that its imports (torch's, ~4 s on 2 cores) overlap the
    caller's own work instead of delaying the first worker; a no-op where there is none."""
    _mp_context()


def _start_helpers() -> None:
    """Start the forkserver and multiprocessing's resource tracker with SIGHUP ignored (a child
    inherits that). The tracker ignores SIGINT and SIGTERM itself but not SIGHUP: a closed
    terminal killed it, and the relaunched tracker printed tracebacks about semaphores it did
    not know. Both end when this process does (they read its pipe), so they need no SIGHUP;
    a worker takes the default back (:func:`_main`) and ends on it as on SIGTERM."""
    import threading
    from multiprocessing import forkserver

    if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        forkserver.ensure_running()  # signal handlers can be set from the main thread only
        return
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGHUP, previous)


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Inside the block, a worker started without a limit of its own (``call_in_worker`` deep in
    a harness) is waited for at most ``seconds`` per event; None keeps the outer limit."""
    token = _limit.set(seconds if seconds is not None else _limit.get())
    try:
        yield
    finally:
        _limit.reset(token)


def _main(events, environ: dict, target: Callable, args: tuple) -> None:
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_DFL)  # the forkserver ignores it (_start_helpers)
    if os.environ != environ:  # the forkserver's environment is the one it started with
        os.environ.clear()
        os.environ.update(environ)

    def emit(kind: str, payload: Any = None) -> None:
        events.put((kind, payload))

    try:
        target(emit, *args)
    except BaseException as exc:  # everything is reported; the parent decides what it means
        events.put(("raised", (error_line(exc), is_out_of_memory(exc), traceback.format_exc())))
    finally:
        events.put(("done", None))
        events.close()
        events.join_thread()  # flush before the process ends


def death_line(exitcode: int | None) -> str:
    """How a worker ended without finishing, naming the signal that ended it if one did."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"worker process killed by {name} (exit code {exitcode})"
    return f"worker process died with exit code {exitcode}"


Limit = float | Callable[[str, Any], float] | None


def _limit_after(limit_s: Limit, kind: str, payload: Any) -> float:
    """Seconds to wait for the event after ``(kind, payload)`` (``("started", None)`` first)."""
    if callable(limit_s):
        return limit_s(kind, payload)
    if limit_s is not None:
        return limit_s
    return _limit.get() or DEFAULT_LIMIT_S


def run_in_worker(
    target: Callable, *args, name: str = "cnnbench-worker", limit_s: Limit = None
) -> Iterator[tuple[str, Any]]:
    """Run ``target(emit, *args)`` in a fresh worker process; yield each ``(kind, payload)`` it emits.

    ``target`` must be a module-level function (spawn pickles it). Ends when it returns; an
    exception arrives as ``("raised", (line, oom, traceback))``; a process that dies without
    finishing (killed, out of memory) as ``("died", line)`` naming its exit code or signal.
    ``limit_s``: the most seconds to wait for each next event, or a function of the last event
    ``(kind, payload)`` giving it (called with ``("started", None)`` first); a worker silent past
    it is killed and ``("timeout", seconds)`` ends the stream. Leaving the loop early (an
    exception in the caller, Ctrl-C) ends the worker too.
    """
    ctx = _mp_context()
    events = ctx.Queue()
    proc = ctx.Process(target=_main, args=(events, dict(os.environ), target, args), name=name)
    proc.start()
    try:
        wait_s = _limit_after(limit_s, "started", None)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                kind, payload = events.get(timeout=min(1.0, max(0.01, deadline - time.monotonic())))
            except queue_mod.Empty:
                if not proc.is_alive():
                    yield "died", death_line(proc.exitcode)
                    return
                if time.monotonic() >= deadline:
                    _end(proc)
                    yield "timeout", wait_s
                    return
                continue
            if kind == "done":
                return
            wait_s = _limit_after(limit_s, kind, payload)
            deadline = time.monotonic() + wait_s
            yield kind, payload
    finally:
        _end(proc)
        events.close()
        events.join_thread()


def _end(proc) -> None:
    """End ``proc`` if it still runs: SIGTERM, then SIGKILL for one that ignores it (or hangs in
    a driver call), each with a bounded wait."""
    if proc.is_alive():
        proc.terminate()
        proc.join(timeout=5)
    if proc.is_alive():
        proc.kill()
    proc.join(timeout=5)


def _call(emit, target: Callable, args: tuple) -> None:
    emit("result", target(*args))


def call_in_worker(
    target: Callable, *args, name: str = "cnnbench-worker", limit_s: float | None = None
) -> Any:
    """``target(*args)`` in a fresh process: its return value, or :class:`WorkerError` (within
    ``limit_s`` seconds, else the enclosing :func:`time_limit`'s, else DEFAULT_LIMIT_S)."""
    for kind, payload in run_in_worker(_call, target, args, name=name, limit_s=limit_s):
        if kind == "result":
            return payload
        if kind == "raised":
            line, oom, remote = payload
            raise WorkerError(line, oom=oom, remote_traceback=remote)
        if kind == "died":
            raise WorkerError(f"{payload} (killed: likely out of memory)", oom=True)
        if kind == "timeout":
            raise WorkerError(f"no result within the time limit of {payload:g} s; the worker "
                              "was killed", timed_out_s=payload)  # fmt: skip
    raise WorkerError("worker ended without a result")
