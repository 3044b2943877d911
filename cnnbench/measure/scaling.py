"""Data-parallel scaling: the training step under ``DistributedDataParallel``, one process per
rank, launched by torch.distributed's elastic launcher (the engine behind ``torchrun``).

For each world size W the same job runs on every rank: the model (same seed), DDP around it,
the run's optimizer, and two steps timed in alternation on rank 0 after a barrier —

- the DDP step (forward, backward with the gradient all-reduce overlapped in buckets, optimizer
  step), and
- the same step under ``no_sync()`` (no all-reduce: what each rank computes alone);

their difference of medians, less the same difference at one rank (DDP's own cost without any
traffic, ``ddp_overhead_ms``), is the communication the overlap did not hide
(``exposed_comm_ms``). DDP is built with ``broadcast_buffers=False`` so that the no_sync step
moves nothing at all.
Weak scaling keeps the per-rank batch (global batch = W x it); strong scaling keeps the global
batch (per rank: global / W). ``images_per_s`` = global batch / median step; speed-up and
efficiency are against W = 1 measured in the same unit: efficiency = images/s_W / (W x images/s_1).

Beside each measurement, a prediction: a ring all-reduce moves 2(W-1)/W x the gradient bytes
through each link, at the bandwidth a timed all-reduce of a large tensor reached on the same
group (``allreduce_bus_bytes_per_s``); ``predicted_comm_ms`` is that time, and the gap to the
exposed time says whether the cost is bandwidth (close) or is hidden by overlap (exposed < it).

On CPU each rank gets its own thread count (``threads_per_rank``, default 1), so W ranks use W
cores and efficiency compares like with like; NCCL on CUDA (rank r on ``cuda:LOCAL_RANK``),
gloo on CPU. Failures: a rank that raises ends the launch (no restarts) and the unit's ``error``
record names the rank; a rank stuck in a collective gives up after the process group's timeout.

Several machines: ``torchrun --nnodes N --nproc-per-node G --rdzv-backend c10d --rdzv-endpoint
HOST:PORT -m cnnbench.measure.scaling --model M ...`` runs one world size across them; rank 0
writes the point as JSON (see :func:`main`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch

from ..config import TimingConfig
from ..results import Spec
from ..results.types import ScalingPoint, ScalingResult
from ..stats import median_interval
from . import workload
from ._device import set_tf32, synchronize

__all__ = ["ScalingJob", "launch", "measure_unit", "measure", "ddp_step_parameters", "main"]

PROBE_BYTES = {"cpu": 16 * 2**20, "cuda": 256 * 2**20}  # the bandwidth probe's all-reduce


@dataclass(frozen=True)
class ScalingJob:
    """What every rank needs to measure one world size (pickled to each rank)."""

    spec: Spec  # model, size, per-rank batch (weak scaling), device type, dtype, memory format
    global_batch: int  # strong scaling's global batch
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    timing: TimingConfig = TimingConfig()
    backend: str = "gloo"
    threads_per_rank: int | None = 1  # CPU: intra-op threads of each rank
    bucket_cap_mb: float = 25.0  # DDP's default
    timeout_s: float = 120.0  # process-group collectives and the rendezvous
    fail_rank: int | None = None  # a rank that raises before measuring (tests of the failure path)


def _rank_device(job: ScalingJob) -> torch.device:
    """Local rank r on the r-th GPU from the spec's own (``cuda:N``: N + r)."""
    if job.spec.device.startswith("cuda"):
        first = torch.device(job.spec.device).index or 0
        return torch.device("cuda", first + int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _setup_rank(job: ScalingJob) -> tuple[int, int, torch.device]:
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if job.fail_rank == rank:
        raise RuntimeError(f"rank {rank} raised on purpose (the failure path under test)")
    device = _rank_device(job)
    # the math of the spec, both TF32 flags set (as every cnnbench worker does)
    set_tf32(bool(job.spec.tf32))
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    elif job.threads_per_rank:
        torch.set_num_threads(job.threads_per_rank)
    dist.init_process_group(job.backend, timeout=timedelta(seconds=job.timeout_s))
    return rank, world, device


def _ddp(job: ScalingJob, device: torch.device):
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = workload.build_model(dataclasses.replace(job.spec, device=str(device)))
    # broadcast_buffers off: DDP's forward would otherwise sync buffers (BatchNorm statistics)
    # even under no_sync(), and the no_sync step must be free of communication
    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
              bucket_cap_mb=job.bucket_cap_mb, gradient_as_bucket_view=True,
              broadcast_buffers=False)  # fmt: skip
    opt = workload.make_optimizer(ddp.parameters(), job.optimizer, job.lr, job.momentum)
    return model, ddp, opt


def _batch(job: ScalingJob, per_rank: int, device: torch.device, rank: int):
    spec = dataclasses.replace(job.spec, batch_size=per_rank)
    gen = torch.Generator().manual_seed(1000 + rank)  # each rank its own slice of data
    x = workload.example_input(spec, device, generator=gen)
    from ..models import get_spec

    labels = torch.randint(0, get_spec(spec.model).num_classes, (per_rank,), generator=gen)
    return x, labels.to(device)


def _time_pair(step, local_step, device, cfg: TimingConfig) -> tuple[list[float], list[float]]:
    """Per-iteration ms of ``step`` and ``local_step`` on this rank, alternating (drift hits
    both alike), each after a barrier so that every rank starts the iteration together."""
    import torch.distributed as dist

    for _ in range(cfg.warmup_runs + 1):
        step()
        local_step()
    synchronize(device)
    dist.barrier()
    t0 = time.perf_counter()
    step()
    synchronize(device)
    estimate = max(time.perf_counter() - t0, 1e-6)
    # every rank must run the same number of iterations: rank 0's estimate decides for all
    n = torch.tensor([min(cfg.max_runs, max(cfg.min_runs, math.ceil(cfg.min_time_s / estimate)))],
                     device=device)  # NCCL has no CPU tensors
    dist.broadcast(n, src=0)
    synced, local = [], []
    for _ in range(int(n.item())):
        for fn, out in ((step, synced), (local_step, local)):
            dist.barrier()
            t = time.perf_counter()
            fn()
            synchronize(device)
            out.append((time.perf_counter() - t) * 1e3)
    return synced, local


def _allreduce_bus_bandwidth(device: torch.device, world: int) -> float | None:
    """Bus bandwidth (bytes/s) of a ring all-reduce of a large fp32 tensor on this group: the
    fastest of a few, 2(W-1)/W x bytes / time. None at W = 1 (nothing moves)."""
    import torch.distributed as dist

    if world == 1:
        return None
    nbytes = PROBE_BYTES["cuda" if device.type == "cuda" else "cpu"]
    buf = torch.ones(nbytes // 4, device=device)
    times = []
    for i in range(7):
        dist.barrier()
        synchronize(device)
        t = time.perf_counter()
        dist.all_reduce(buf)
        synchronize(device)
        if i >= 2:  # two warm-ups: connection set-up and buffer registration
            times.append(time.perf_counter() - t)
    return 2 * (world - 1) / world * nbytes / min(times)


def _summary(times: list[float]) -> tuple[float, float, float]:
    ci = median_interval(times)
    return float(np.median(times)), ci.low, ci.high


def _rank_main(job: ScalingJob) -> dict | None:
    """The entry point of each rank; rank 0 returns the measured world size as a dict."""
    import torch.distributed as dist

    rank, world, device = _setup_rank(job)
    try:
        model, ddp, opt = _ddp(job, device)
        grad_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
        points = []
        scaler = workload.grad_scaler(device, job.spec.dtype)  # fp16: as every training step
        for kind, per_rank in (("weak", job.spec.batch_size), ("strong", job.global_batch // world)):
            x, labels = _batch(job, per_rank, device, rank)

            def step():
                workload.train_step(ddp, opt, x, labels, dtype=job.spec.dtype, scaler=scaler)

            def local_step():
                with ddp.no_sync():  # the same step without the gradient all-reduce
                    workload.train_step(ddp, opt, x, labels, dtype=job.spec.dtype, scaler=scaler)

            synced, local = _time_pair(step, local_step, device, job.timing)
            s50, slo, shi = _summary(synced)
            l50, llo, lhi = _summary(local)
            points.append(dict(
                world_size=world, kind=kind, per_rank_batch=per_rank, global_batch=per_rank * world,
                step_ms_p50=s50, step_ms_ci_low=slo, step_ms_ci_high=shi,
                local_step_ms_p50=l50, local_step_ms_ci_low=llo, local_step_ms_ci_high=lhi,
                exposed_comm_ms=s50 - l50, images_per_s=per_rank * world / (s50 / 1e3),
                times_ms=tuple(round(t, 5) for t in synced),
                local_times_ms=tuple(round(t, 5) for t in local),
            ))  # fmt: skip
        bus = _allreduce_bus_bandwidth(device, world)
        hosts = [None] * world
        dist.all_gather_object(hosts, socket.gethostname())
        for p in points:
            p["allreduce_bus_bytes_per_s"] = bus
            p["predicted_comm_ms"] = (
                0.0 if world == 1 else 2 * (world - 1) / world * grad_bytes / bus * 1e3
            )
        info = dict(
            grad_bytes=grad_bytes,
            trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
            backend=dist.get_backend(),
            ddp=dict(bucket_cap_mb=job.bucket_cap_mb, gradient_as_bucket_view=True,
                     static_graph=False, find_unused_parameters=False, broadcast_buffers=False,
                     ranks_per_node=int(os.environ.get("LOCAL_WORLD_SIZE", world)),
                     nodes=len(set(hosts)), threads_per_rank=job.threads_per_rank if
                     device.type == "cpu" else None,
                     nccl_version=".".join(map(str, torch.cuda.nccl.version()))
                     if device.type == "cuda" else None),  # fmt: skip
            hosts=sorted(set(hosts)),
            points=points,
        )
        return info if rank == 0 else None
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RankFailed(RuntimeError):
    """A rank raised or died; the message names it."""


def launch(job: ScalingJob, nproc: int, entrypoint=None, *args) -> dict:
    """Run ``entrypoint(job, *args)`` (default: the measurement) on ``nproc`` local ranks
    through the elastic launcher; rank 0's return value."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"cnnbench-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{_free_port()}",
        rdzv_configs={"timeout": int(job.timeout_s)}, max_restarts=0, monitor_interval=0.1,
        start_method="spawn",
    )  # fmt: skip
    try:
        results = elastic_launch(config, entrypoint or _rank_main)(job, *args)
    except ChildFailedError as exc:
        rank, failure = min(exc.failures.items())
        why = failure.message if isinstance(failure.message, str) else json.dumps(failure.message)
        first = next((ln for ln in str(why).splitlines() if ln.strip()), "no message")
        raise RankFailed(f"rank {rank} of {nproc} failed (exit code {failure.exitcode}): "
                         f"{first[:300]}") from None  # fmt: skip
    return results[0]


def measure(job: ScalingJob, world_sizes: tuple[int, ...]) -> ScalingResult:
    """Every world size of ``world_sizes`` (1 is always measured first: the baseline)."""
    sizes = sorted({1, *world_sizes})
    runs = {w: launch(job, w) for w in sizes}
    base = {p["kind"]: p["images_per_s"] for p in runs[1]["points"]}
    # step − no_sync step at one rank: DDP's own cost (reducer, bucket copies), no traffic
    overhead = {p["kind"]: p["exposed_comm_ms"] for p in runs[1]["points"]}
    points = []
    for w in sizes:
        for p in runs[w]["points"]:
            speedup = p["images_per_s"] / base[p["kind"]]
            exposed = 0.0 if w == 1 else p["exposed_comm_ms"] - overhead[p["kind"]]
            points.append(ScalingPoint(**{**p, "exposed_comm_ms": exposed}, speedup=speedup,
                                       efficiency=speedup / w, ddp_overhead_ms=overhead[p["kind"]]))  # fmt: skip
    first = runs[sizes[-1]]
    return ScalingResult(
        grad_bytes=first["grad_bytes"], trainable_params=first["trainable_params"],
        backend=first["backend"], ddp=first["ddp"], hosts=tuple(first["hosts"]),
        global_batch=job.global_batch, points=tuple(points),
    )  # fmt: skip


def measure_unit(spec: Spec, ctx) -> ScalingResult:
    """The harness entry: the run's scaling options, the accuracy run's optimizer."""
    from .train import optimizer_for

    sc = ctx.config.scaling
    opt = optimizer_for(ctx.config, spec.model)
    sizes = sc.world_sizes or default_world_sizes(spec.device)
    job = ScalingJob(
        spec=spec, global_batch=sc.global_batch or spec.batch_size * max(sizes),
        optimizer=opt.name, lr=opt.lr, momentum=opt.momentum, timing=ctx.config.timing,
        backend="nccl" if spec.device.startswith("cuda") else "gloo",
        threads_per_rank=spec.threads, timeout_s=sc.timeout_s, fail_rank=sc.fail_rank,
    )  # fmt: skip
    return measure(job, tuple(sizes))


def default_world_sizes(device: str) -> tuple[int, ...]:
    """1 up to the visible GPUs (doubling), or 1 and 2 on a CPU."""
    if device.startswith("cuda"):
        n, out = torch.cuda.device_count() - (torch.device(device).index or 0), [1]
        while out[-1] * 2 <= n:
            out.append(out[-1] * 2)
        return tuple(out)
    return (1, 2)


def ddp_step_parameters(job: ScalingJob, x: torch.Tensor, labels: torch.Tensor) -> dict | None:
    """One DDP SGD step on this rank's slice of (x, labels) — the slices split the batch
    evenly by rank — returning rank 0's parameters after it (for the equivalence test)."""
    import torch.distributed as dist

    rank, world, device = _setup_rank(job)
    try:
        model, ddp, opt = _ddp(job, device)
        mine = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
        workload.train_step(ddp, opt, x[mine].to(device), labels[mine].to(device))
        return {k: v.detach().cpu() for k, v in model.state_dict().items()} if rank == 0 else None
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    """``torchrun ... -m cnnbench.measure.scaling``: one world size, as torchrun set it up (one
    or several machines); rank 0 writes the point as JSON to ``--out``."""
    p = argparse.ArgumentParser(prog="python -m cnnbench.measure.scaling")
    p.add_argument("--model", required=True)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=16, help="per-rank batch (weak scaling)")
    p.add_argument("--global-batch", type=int, default=None, help="strong scaling's global batch")
    p.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, cuda:LOCAL_RANK)")
    p.add_argument("--threads-per-rank", type=int, default=1)
    p.add_argument("--min-time", type=float, default=0.2)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--out", required=True, help="rank 0 writes its JSON here")
    a = p.parse_args(argv)
    from ..models import get_spec

    world = int(os.environ["WORLD_SIZE"])
    spec = Spec(a.model, a.image_size or get_spec(a.model).input_size, a.batch_size,
                device=a.device, mode="train", threads=a.threads_per_rank)  # fmt: skip
    job = ScalingJob(spec=spec, global_batch=a.global_batch or a.batch_size * world,
                     backend="nccl" if a.device.startswith("cuda") else "gloo",
                     threads_per_rank=a.threads_per_rank, timeout_s=a.timeout,
                     timing=TimingConfig(warmup_runs=1, min_runs=3, min_time_s=a.min_time))  # fmt: skip
    out = _rank_main(job)
    if out is not None:
        with open(a.out, "w") as f:
            json.dump(out, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
