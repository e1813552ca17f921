"""Data preparation → DDP training → evaluation (``workflows/ddp-train.yaml``).

A small regression MLP trained with ``torch.nn.parallel.DistributedDataParallel``.
Every step takes one global batch of ``--batch`` samples (a fixed, seeded order);
each rank trains on its equal slice, and DDP's all-reduce averages the ranks'
gradients, so after N steps the parameters equal those of one process training
on the whole global batch (``reference``), up to float rounding.

Subcommands (``python -m workflows.examples.ddp_train SUB ...``):

- ``prepare DIR``: the data set (``DIR/data.pt``);
- ``train DIR``: the training, one process per rank (hpcorch's ``distributed``
  task sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` ...). Rank 0 saves a
  checkpoint every ``--checkpoint-every`` steps with
  :func:`hpcorch.torchdist.save_checkpoint`, and a new attempt resumes from
  :func:`hpcorch.torchdist.load_checkpoint`. Writes ``DIR/model.pt`` and
  ``DIR/train.json`` (steps/s, where it resumed, the nodes of the ranks, the
  largest difference between ranks' gradients after each all-reduce);
- ``evaluate DIR``: the trained model's loss (``DIR/eval.json``);
- ``reference DIR``: the same training in one process (``DIR/reference.pt``).

``DIR`` defaults to ``$HPCORCH_RUN_DIR/ddp``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from hpcorch import torchdist

SAMPLES = 4096
FEATURES = 16


def _dir(value: str | None) -> Path:
    path = Path(value) if value else Path(os.environ["HPCORCH_RUN_DIR"]) / "ddp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(FEATURES, 64), nn.Tanh(), nn.Linear(64, 1))


def prepare(where: Path) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(SAMPLES, FEATURES, generator=g)
    w = torch.randn(FEATURES, 1, generator=g)
    y = torch.sin(x @ w) + 0.1 * torch.randn(SAMPLES, 1, generator=g)
    torch.save({"x": x, "y": y}, where / "data.pt")


def batch_indices(step: int, batch: int) -> torch.Tensor:
    """The samples of global batch ``step`` (the same on every rank and in ``reference``)."""
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randperm(SAMPLES, generator=g)[:batch]


def _flat_grads(net: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in net.parameters() if p.grad is not None])


def train(
    where: Path, data_file: Path, steps: int, batch: int, lr: float, every: int, sleep: float
) -> None:
    torchdist.init()
    rank, world = dist.get_rank(), dist.get_world_size()
    if batch % world:
        raise SystemExit(f"--batch {batch} must divide among {world} ranks")
    data = torch.load(data_file)
    net = model()
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    start = 0
    state = torchdist.load_checkpoint()
    if state is not None:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
    ddp = nn.parallel.DistributedDataParallel(net)
    local = batch // world
    grad_diff = 0.0
    # rank 0 appends "ATTEMPT STEP TIME" per step: where the training was when, for
    # whoever measures a restart's cost (scripts/bench/training)
    progress = open(where / "progress.log", "a") if rank == 0 else None  # noqa: SIM115
    attempt = os.environ.get("HPCORCH_ATTEMPT", "0")
    began = time.perf_counter()
    for step in range(start, steps):
        idx = batch_indices(step, batch)[rank * local : (rank + 1) * local]
        opt.zero_grad()
        loss = nn.functional.mse_loss(ddp(data["x"][idx]), data["y"][idx])
        loss.backward()  # DDP all-reduces (averages) the gradients here
        grads = _flat_grads(net)
        lo, hi = grads.clone(), grads.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        grad_diff = max(grad_diff, float((hi - lo).abs().max()))
        opt.step()
        done = step + 1
        if progress is not None:
            progress.write(f"{attempt} {done} {time.time():.3f}\n")
            progress.flush()
        if rank == 0 and every and done % every == 0 and done < steps:
            torchdist.save_checkpoint(
                {"step": done, "model": net.state_dict(), "opt": opt.state_dict()}, done
            )
        if sleep:
            time.sleep(sleep)
    elapsed = time.perf_counter() - began
    if progress is not None:
        progress.close()
    nodes: list[Any] = [None] * world
    dist.all_gather_object(nodes, os.environ.get("SLURMD_NODENAME") or socket.gethostname())
    # each rank's intra-op threads and usable CPUs (where a launch's overhead shows)
    threads: list[Any] = [None] * world
    dist.all_gather_object(threads, [torch.get_num_threads(), len(os.sched_getaffinity(0))])
    if rank == 0:
        torch.save(net.state_dict(), where / "model.pt")
        summary = {
            "world_size": world,
            "steps": steps,
            "resumed_from": start,
            "steps_per_s": (steps - start) / elapsed if elapsed > 0 else None,
            "max_grad_diff": grad_diff,
            "nodes": nodes,
            "threads_cpus": threads,
            "master_port": int(os.environ["MASTER_PORT"]),
        }
        (where / "train.json").write_text(json.dumps(summary))
    dist.barrier()
    dist.destroy_process_group()


def reference(where: Path, steps: int, batch: int, lr: float) -> None:
    data = torch.load(where / "data.pt")
    net = model()
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    for step in range(steps):
        idx = batch_indices(step, batch)
        opt.zero_grad()
        nn.functional.mse_loss(net(data["x"][idx]), data["y"][idx]).backward()
        opt.step()
    torch.save(net.state_dict(), where / "reference.pt")


def evaluate(where: Path) -> None:
    data = torch.load(where / "data.pt")
    net = model()
    net.load_state_dict(torch.load(where / "model.pt"))
    with torch.no_grad():
        loss = float(nn.functional.mse_loss(net(data["x"]), data["y"]))
    (where / "eval.json").write_text(json.dumps({"mse": loss}))


def max_param_diff(a: Path, b: Path) -> float:
    sa, sb = torch.load(a), torch.load(b)
    return max(float((sa[k] - sb[k]).abs().max()) for k in sa)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ddp_train")
    parser.add_argument("sub", choices=["prepare", "train", "evaluate", "reference"])
    parser.add_argument("dir", nargs="?")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--data", help="the data set (default: DIR/data.pt)")
    parser.add_argument("--step-sleep", type=float, default=0.0, help="seconds after each step")
    args = parser.parse_args(argv)
    where = _dir(args.dir)
    if args.sub == "prepare":
        prepare(where)
    elif args.sub == "train":
        data = Path(args.data) if args.data else where / "data.pt"
        every, sleep = args.checkpoint_every, args.step_sleep
        train(where, data, args.steps, args.batch, args.lr, every, sleep)
    elif args.sub == "reference":
        reference(where, args.steps, args.batch, args.lr)
    else:
        evaluate(where)
    return 0


if __name__ == "__main__":
    sys.exit(main())
