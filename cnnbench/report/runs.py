"""Run folders in, records and their conditions out: what a report, a compare or a history page
says about where its numbers come from. Shards of one run merge; folders measured on different
software or devices are refused unless asked (``--allow-mixed``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..results import Record, RunStore

__all__ = ["MixedRuns", "Runs", "check_mergeable", "load_runs"]


@dataclass(frozen=True)
class Runs:
    records: tuple[Record, ...]
    envs: dict  # run folder → its env.json
    conditions: tuple[str, ...]  # one line per folder: the setup and every invocation
    paired: bool  # one run measured in one go: its rounds pair across models


def load_runs(run_dirs: list[Path], *, allow_mixed: bool = False) -> Runs:
    """Every record of ``run_dirs`` with each folder's conditions; refuses a folder that is not a
    run and, unless ``allow_mixed``, folders that are not shards of one run."""
    envs = {}
    for d in run_dirs:
        store = RunStore(d)
        if not store.results_path.exists():
            raise FileNotFoundError(f"{d}: no results.jsonl (is it a cnnbench run folder?)")
        envs[Path(d)] = store.read_env()
    if len(envs) > 1 and not allow_mixed:
        check_mergeable(envs)
    records, conditions = [], []
    for d, env in envs.items():
        records += RunStore(d).records()
        conditions.append(_conditions(env, d))
    # rounds pair across models only inside one run measured in one go
    paired = len(envs) == 1 and not next(iter(envs.values())).get("resumed")
    return Runs(tuple(records), envs, tuple(conditions), paired)


def _setting(cfg: dict, name: str):
    """A config value from env.json, nested by section (``config["workload"]["dtype"]``) or, as
    runs before the sectioned config wrote it, flat (``config["dtype"]``); ``name`` is a field or
    a command-line option (``train_batch_size`` is ``config["train"]["batch_size"]``)."""
    from ..config import OPTIONS, SECTIONS

    if name in cfg:
        return cfg[name]
    if name in OPTIONS and isinstance(cfg.get(OPTIONS[name].section), dict):
        return cfg[OPTIONS[name].section].get(OPTIONS[name].field)
    for section, _, _ in SECTIONS:
        if name in (cfg.get(section) or {}):
            return cfg[section][name]
    return None


def _git(env: dict) -> str:
    return f"git {str(env.get('git_commit'))[:10]}{' (dirty)' if env.get('git_dirty') else ''}"


def _timing(env: dict) -> str:
    """The run's wall time beside the plan's estimate, for each session that recorded them."""
    parts = []
    for e in [env, *(x for x in env.get("resumed") or [] if isinstance(x, dict))]:
        plan = e.get("plan") or {}
        # the run's own clock: units, env.json, peaks (the plan's part of the same span)
        estimate, took = plan.get("in_run_s", plan.get("estimate_s")), e.get("wall_s")
        if took is not None:
            parts.append(f"took {took:.0f} s" + (f" (the plan estimated {estimate:.0f} s)" if estimate else ""))
    return f"; {', then '.join(parts)}" if parts else ""


def _conditions(env: dict, run_dir: Path) -> str:
    """The setup and every invocation, in one line per run folder. A resumed run lists each
    session's commit and command line (env.json "resumed")."""
    cfg = env.get("config", {})
    device = env.get("device_name") or env.get("device")
    cuda = env.get("cuda") or {}
    if cuda:
        device += f" ({cuda.get('sm_count')} SMs, {cuda.get('memory_bytes', 0) / 2**30:.0f} GiB)"
    over = cfg.get("overrides") or []
    over_text = ", ".join(f"{k}={_setting(cfg, k)}" for k in over) or "none"
    threads = (env.get("cpu") or {}).get("torch_threads")
    sessions = [env] + [e for e in env.get("resumed") or [] if isinstance(e, dict)]
    setup = (
        f"{run_dir.name}: {cfg.get('device', env.get('device'))} — {device}; dtype {_setting(cfg, 'dtype') or 'fp32'}"
        f"{', channels_last' if _setting(cfg, 'channels_last') else ''}{', torch.compile' if _setting(cfg, 'compile') else ''}; "
        f"profile {cfg.get('profile', '?')}; overrides: {over_text}; CPU threads {threads}; "
        f"torch {env.get('versions', {}).get('torch')}, fvcore {env.get('versions', {}).get('fvcore')}, "
        f"Python {env.get('python')}"
    )  # fmt: skip
    setup += _timing(env)
    if len(sessions) == 1:
        return f"{setup}; {_git(env)}; command: `{cfg.get('command_line', '')}`"
    calls = "; ".join(
        f"({i}) {_git(e)}: `{(e.get('config') or {}).get('command_line', '')}`"
        for i, e in enumerate(sessions, 1)
    )
    return f"{setup}; {len(sessions)} invocations (resumed): {calls}"


class MixedRuns(ValueError):
    """Run folders measured on different software or devices, put in one report unasked."""


# what must agree between run folders merged into one report (shards of one run)
MERGE_KEYS = (("torch", ("versions", "torch")), ("torchvision", ("versions", "torchvision")),
              ("fvcore", ("versions", "fvcore")), ("device", ("device_name",)))  # fmt: skip


def _merge_key(env: dict) -> dict[str, Any]:
    out = {}
    for name, path in MERGE_KEYS:
        value: Any = env
        for part in path:
            value = (value or {}).get(part) if isinstance(value, dict) else None
        out[name] = value
    return out


def check_mergeable(envs: dict[Path, dict]) -> None:
    """Refuse folders that measured on different software or device kinds (one line naming the
    first difference); ``--allow-mixed`` skips this."""
    keys = {d: _merge_key(e) for d, e in envs.items()}
    first_dir, first = next(iter(keys.items()))
    for d, k in keys.items():
        for name in first:
            if k[name] != first[name]:
                raise MixedRuns(
                    f"{d} measured with {name} {k[name]!r}, {first_dir} with {first[name]!r}: "
                    "not shards of one run; pass --allow-mixed to put them in one report anyway"
                )


