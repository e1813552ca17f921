"""torch.distributed trainings on the dev cluster (issue 22), gloo on CPUs.

- ``workflows/ddp-train.yaml``-style run: a 2-node x 2-rank DDP training gives,
  after N steps, the parameters of one process training on the same global
  batches; the ranks' gradients are identical after every all-reduce; the ranks
  sit two per node on both nodes; two trainings at once get different ports;
- ``fail-node`` on a training node mid-run: the task is resubmitted, resumes from
  its newest checkpoint (not step 0) and ends with the same parameters.

Needs PyTorch in the virtualenv (scripts/bootstrap installs it): without it the
trainings fail, never skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.waiting import wait_for

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
HPCORCH = Path(PYTHON).with_name("hpcorch")
MODULE = [PYTHON, "-m", "workflows.examples.ddp_train"]
STEPS = 24
TOL = 1e-5


def _env(cluster: Any) -> dict[str, str]:
    return cluster.cli_env() | {
        "PATH": f"{Path(PYTHON).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HPCORCH_SCALE_INTERVAL": "1",
        # the one-node allocation of `prepare` makes way for the training's two nodes
        "HPCORCH_IDLE_TIMEOUT": "10",
        "PYTHONPATH": str(REPO),
    }


def _workflow(path: Path, train_args: list[str], pairs: bool) -> Path:
    tasks: list[dict[str, Any]] = [
        {"id": "prepare", "command": [*MODULE, "prepare"], "resources": {"memory": "1GiB"}},
        {
            "id": "train",
            "after": ["prepare"],
            "command": [*MODULE, "train", "--steps", str(STEPS), *train_args],
            "distributed": {"nodes": 2, "ranks_per_node": 2, "checkpoint_dir": "ckpt"},
            "resources": {"memory": "1GiB", "walltime": "10m"},
            "retries": 1,
        },
        {
            "id": "evaluate",
            "after": ["train"],
            "command": [*MODULE, "evaluate"],
            "resources": {"memory": "1GiB"},
        },
    ]
    if pairs:  # two one-node trainings beside each other: each its own port
        for name in ("pair-a", "pair-b"):
            tasks.append(
                {
                    "id": name,
                    "after": ["train"],
                    "command": [
                        *MODULE,
                        "train",
                        f"{{run}}/{name}",
                        "--steps",
                        "4",
                        "--checkpoint-every",
                        "0",
                        # a few seconds each, so that both started is both running
                        "--step-sleep",
                        "1",
                        "--data",
                        "{run}/ddp/data.pt",
                    ],
                    "distributed": {"nodes": 1, "ranks_per_node": 2},
                    "resources": {"memory": "1GiB", "walltime": "10m"},
                }
            )
    path.write_text(yaml.safe_dump({"name": "ddp", "tasks": tasks}))
    return path


def _hpcorch(cluster: Any, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HPCORCH), *argv],
        cwd=REPO,
        env=_env(cluster),
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )


def _status(cluster: Any, run_dir: Path) -> dict[str, Any]:
    proc = _hpcorch(cluster, "status", str(run_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def _attempts(data: dict[str, Any], task: str) -> list[dict[str, Any]]:
    return next(t["attempts"] for t in data["tasks"] if t["id"] == task)


def _reference(where: Path) -> float:
    """Train in one process on the same global batches; the largest parameter difference."""
    subprocess.run(
        [
            PYTHON,
            "-m",
            "workflows.examples.ddp_train",
            "reference",
            str(where),
            "--steps",
            str(STEPS),
        ],
        cwd=REPO,
        check=True,
        timeout=300,
    )
    sys.path.insert(0, str(REPO))
    from workflows.examples.ddp_train import max_param_diff  # noqa: PLC0415

    return max_param_diff(where / "model.pt", where / "reference.pt")


def test_ddp_two_nodes_matches_one_process(dev_cluster: Any, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    wf = _workflow(tmp_path / "ddp.yaml", [], pairs=True)
    # the pairs' directory names the run directory
    wf.write_text(wf.read_text().replace("{run}", str(run_dir)))
    proc = _hpcorch(dev_cluster, "run", str(wf), "--site", "dev", "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = _status(dev_cluster, run_dir)
    assert data["state"] == "succeeded", data["counts"]
    where = run_dir / "ddp"
    summary = json.loads((where / "train.json").read_text())
    assert summary["world_size"] == 4 and summary["resumed_from"] == 0
    assert summary["max_grad_diff"] <= 1e-7, summary  # every rank the same averaged gradient
    # two ranks on each node, block order, as the journal says
    (attempt,) = _attempts(data, "train")
    assert summary["nodes"] == attempt["ranks"] and sorted(set(attempt["ranks"])) == [
        "cpu1",
        "cpu2",
    ]
    assert attempt["ranks"][0] == attempt["ranks"][1] != attempt["ranks"][2] == attempt["ranks"][3]
    assert attempt["training"].endswith(f":{summary['master_port']}")
    assert _reference(where) <= TOL
    assert json.loads((where / "eval.json").read_text())["mse"] >= 0
    # the two one-node trainings: each its own port (journal and what the ranks saw)
    ports, spans = {}, []
    for name in ("pair-a", "pair-b"):
        (a,) = _attempts(data, name)
        spans.append((a["start"], a["end"]))
        ports[name] = int(a["training"].rsplit(":", 1)[1])
        assert json.loads((run_dir / name / "train.json").read_text())["master_port"] == ports[name]
    assert ports["pair-a"] != ports["pair-b"] != summary["master_port"]
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1, f"the two trainings did not run at once: {spans}"


def test_fail_node_resumes_from_the_last_checkpoint(dev_cluster: Any, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    wf = _workflow(tmp_path / "ddp.yaml", ["--checkpoint-every", "4", "--step-sleep", "1"], False)
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen(
        [str(HPCORCH), "run", str(wf), "--site", "dev", "--run-dir", str(run_dir), "-v"],
        cwd=REPO,
        env=_env(dev_cluster),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    ckpt = run_dir / "ckpt"
    failed = ""
    try:
        wait_for(
            lambda: ckpt.is_dir() and any(p.suffix == ".pt" for p in ckpt.iterdir()),
            400,
            "a first checkpoint",
            interval=1,
        )
        (running,) = _attempts(_status(dev_cluster, run_dir), "train")
        failed = running["ranks"][-1]  # a node of the training that is not rank 0's
        dev_cluster.script_cmd("fail-node", failed)
        wait_for(
            lambda: any(
                a["failure_class"] for a in _attempts(_status(dev_cluster, run_dir), "train")
            ),
            300,
            "the training's attempt to fail",
            interval=1,
        )
    finally:
        if failed:
            dev_cluster.script_cmd("heal-node", failed, check=False)
        # the run's own allocation needs both cpu nodes back (the dev cluster has two)
    try:
        assert proc.wait(600) == 0, (tmp_path / "run.log").read_text()[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    data = _status(dev_cluster, run_dir)
    assert data["state"] == "succeeded", data["counts"]
    first, *_, last = _attempts(data, "train")
    assert first["failure_class"], first  # node_failure, or the step failing with its node
    resumed = int(last["training"].partition("resume=ckpt-")[2].removesuffix(".pt"))
    summary = json.loads((run_dir / "ddp" / "train.json").read_text())
    assert 0 < resumed == summary["resumed_from"] < STEPS, (last, summary)
    assert _reference(run_dir / "ddp") <= TOL
