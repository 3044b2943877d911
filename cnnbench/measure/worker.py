"""The one worker protocol: a function run in a fresh process, what it emits streamed back to the
parent, its exception or its death reported as one line.

Workers are forked from a ``forkserver`` that imported torch and the harnesses once and never ran
an operator: each worker starts with fresh allocator, thread-pool, oneDNN and CUDA state, like a
``spawn``, in ~0.03 s instead of the ~2 s a spawn spends importing torch again (a default CPU run
starts about twenty workers). The server keeps the environment it started with, so each worker
takes the parent's current ``os.environ`` first (``$CNNBENCH_PLUGINS``, ``$CUDA_VISIBLE_DEVICES``
set later still count). Where there is no forkserver (Windows), workers are spawned.

The runner measures each model in such a worker (allocator state, cuDNN/oneDNN caches and
resident memory of one model cannot change another's numbers), and the CPU memory harness gets
one of its own for each peak-RSS measurement (the peak of a process that did nothing else).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from ._device import is_oom

__all__ = ["WorkerError", "error_line", "run_in_worker", "call_in_worker"]


def error_line(exc: BaseException) -> str:
    """An exception as one line of at most 500 characters: what a record's reason holds."""
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:500]


class WorkerError(RuntimeError):
    """The worker's function raised (``oom`` says whether it ran out of memory) or it died."""

    def __init__(self, line: str, *, oom: bool = False, remote_traceback: str = ""):
        super().__init__(line)
        self.oom = oom
        self.remote_traceback = remote_traceback


# imported once by the forkserver (cli: the console script, which a worker re-imports as its
# __main__); none of them touches a device at import time
_PRELOAD = ["torch", "torchvision", "cnnbench.measure.harnesses", "cnnbench.runner", "cnnbench.cli"]
_context = None


def _mp_context():
    global _context
    if _context is None:
        if "forkserver" in mp.get_all_start_methods():
            _context = mp.get_context("forkserver")
            _context.set_forkserver_preload(_PRELOAD)
        else:
            _context = mp.get_context("spawn")
    return _context


def _main(events, environ: dict, target: Callable, args: tuple) -> None:
    if os.environ != environ:  # the forkserver's environment is the one it started with
        os.environ.clear()
        os.environ.update(environ)

    def emit(kind: str, payload: Any = None) -> None:
        events.put((kind, payload))

    try:
        target(emit, *args)
    except BaseException as exc:  # everything is reported; the parent decides what it means
        oom = is_oom(exc) or isinstance(exc, MemoryError)
        events.put(("raised", (error_line(exc), oom, traceback.format_exc())))
    finally:
        events.put(("done", None))
        events.close()
        events.join_thread()  # flush before the process ends


def run_in_worker(
    target: Callable, *args, name: str = "cnnbench-worker"
) -> Iterator[tuple[str, Any]]:
    """Run ``target(emit, *args)`` in a fresh worker process; yield each ``(kind, payload)`` it emits.

    ``target`` must be a module-level function (spawn pickles it). Ends when it returns; an
    exception arrives as ``("raised", (line, oom, traceback))``; a process that dies without
    finishing (killed, out of memory) as ``("died", "worker process died with exit code N")``.
    Leaving the loop early terminates the worker.
    """
    ctx = _mp_context()
    events = ctx.Queue()
    proc = ctx.Process(target=_main, args=(events, dict(os.environ), target, args), name=name)
    proc.start()
    try:
        while True:
            try:
                kind, payload = events.get(timeout=1.0)
            except queue_mod.Empty:
                if not proc.is_alive():
                    yield "died", f"worker process died with exit code {proc.exitcode}"
                    return
                continue
            if kind == "done":
                return
            yield kind, payload
    finally:
        if proc.is_alive():
            proc.terminate()
        proc.join(timeout=10)


def _call(emit, target: Callable, args: tuple) -> None:
    emit("result", target(*args))


def call_in_worker(target: Callable, *args, name: str = "cnnbench-worker") -> Any:
    """``target(*args)`` in a fresh process: its return value, or :class:`WorkerError`."""
    for kind, payload in run_in_worker(_call, target, args, name=name):
        if kind == "result":
            return payload
        if kind == "raised":
            line, oom, remote = payload
            raise WorkerError(line, oom=oom, remote_traceback=remote)
        if kind == "died":
            raise WorkerError(f"{payload} (killed: likely out of memory)", oom=True)
    raise WorkerError("worker ended without a result")
