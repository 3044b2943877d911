"""Fixtures every test module may use.

``smoke_run``: one real ``cnnbench run`` (smoke profile) that every test which only reads a run's
records, env.json or report shares, instead of paying for a run of its own. It is made once per
test session, whatever the number of xdist workers (a file lock beside the workers' temporary
folders), and its folder is shared read-only: a test that writes (a resume, a compare into it, a
doctored copy) works on ``shutil.copytree(smoke_run.path, tmp_path / ...)``. Each worker checks
at its end that the folder is byte for byte what the run wrote, so a test that writes into it
fails the session rather than passing on another test's changes. Tests that use it run in one
xdist group, so that one worker makes it and no other waits for it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

SMOKE_GROUP = "smoke_run"
# googlenet (its lineage and noise control), nin (a count the tests know: 1,992,166 parameters),
# alexnet (exercises 2, 4 and 5 compare against it), and a model whose forward pass raises (a
# failed record in the report); every metric but scaling, on one thread
SMOKE_ARGV = ("run", "--profile", "smoke", "--models", "googlenet,nin,alexnet,raises_in_forward",
              "--threads", "1")  # fmt: skip
SMOKE_MODELS_OK = ("googlenet", "nin", "alexnet")
PLUGINS = "tests.plugins.failing_models"


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        if "smoke_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group(SMOKE_GROUP))
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA; none on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@dataclass(frozen=True)
class SharedRun:
    path: Path  # the run folder: read it, never write into it
    exit_code: int  # what `cnnbench run` returned (1: the raising model's records are errors)


def tree_digest(root: Path) -> str:
    """SHA-256 over every file's relative path and bytes under ``root``."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def _make_smoke_run(out: Path) -> int:
    from cnnbench.cli import main

    old = os.environ.get("CNNBENCH_PLUGINS")
    os.environ["CNNBENCH_PLUGINS"] = PLUGINS
    try:
        import tests.plugins.failing_models  # noqa: F401  (registers the failing model here too)

        return main([*SMOKE_ARGV, "--out", str(out)])
    finally:
        if old is None:
            os.environ.pop("CNNBENCH_PLUGINS", None)
        else:
            os.environ["CNNBENCH_PLUGINS"] = old


@pytest.fixture(scope="session")
def smoke_run(request, tmp_path_factory) -> SharedRun:
    base = tmp_path_factory.getbasetemp()  # an xdist worker's: <the session's folder>/popen-gwN
    root = base.parent if hasattr(request.config, "workerinput") else base
    out, made = root / "smoke-run", root / "smoke-run.json"
    with open(root / "smoke-run.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first worker makes it, the others wait
        if not made.exists():
            code = _make_smoke_run(out)
            made.write_text(json.dumps({"exit_code": code, "digest": tree_digest(out)}))
        facts = json.loads(made.read_text())
    yield SharedRun(out, facts["exit_code"])
    assert tree_digest(out) == facts["digest"], (
        f"a test wrote into the shared smoke run {out}: copy it first (tests/conftest.py)"
    )
