"""render_sbatch: generated scripts compared with stored expected files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from hpcorch.sites import load_site
from hpcorch.sites.model import Prologue
from hpcorch.slurm.script import JobRequest, render_sbatch

EXPECTED = Path(__file__).parent / "expected"

CASES = {
    "sbatch_minimal": (JobRequest(command=("python", "-c", "print('hi')")), None),
    "sbatch_full": (
        JobRequest(
            name="hpcorch-worker-3",
            command="srun --mpi=pmix python -m mpi4py.bench ringtest\n",
            partition="gpu",
            account="m1234",
            qos="regular",
            nodes=2,
            ntasks=8,
            ntasks_per_node=4,
            cpus_per_task=2,
            mem="4GiB",
            gres="gpu:sim:2",
            time_s="1h30m",
            output="/runs/r1/%j.out",
            error="/runs/r1/%j.err",
            chdir="/runs/r1",
            exclude=("gpu2",),
            constraint="gpu",
            requeue=False,
            signal="B:USR1@60",
            comment="hpcorch run r1 task sim",
            env={"HPCORCH_RUN": "r1", "MSG": "two words"},
            extra=("--mail-type=NONE",),
        ),
        Prologue(
            modules=("python/3.11",),
            env={"OMP_NUM_THREADS": "1"},
            commands=("source /opt/env.sh",),
            directives=("--reservation=demo",),
        ),
    ),
    "sbatch_held": (
        JobRequest(
            name="bench",
            command=("sleep", "3600"),
            nodes=1,
            ntasks=1,
            mem=0,
            time_s=60,
            hold=True,
            begin="now+1hour",
            nodelist=("cpu1",),
            requeue=True,
        ),
        None,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_render_matches_expected(name: str) -> None:
    req, prologue = CASES[name]
    text = render_sbatch(req, prologue)
    path = EXPECTED / f"{name}.sh"
    if os.environ.get("HPCORCH_REGEN_EXPECTED"):
        path.write_text(text)
    assert text == path.read_text(), f"{path} differs; HPCORCH_REGEN_EXPECTED=1 rewrites it"


def test_render_is_pure_and_stable() -> None:
    req, prologue = CASES["sbatch_full"]
    assert render_sbatch(req, prologue) == render_sbatch(req, prologue)


def test_request_is_frozen_and_strict() -> None:
    req = JobRequest(command="true")
    with pytest.raises(ValidationError):
        req.nodes = 3  # type: ignore[misc]
    with pytest.raises(ValidationError, match="nodez"):
        JobRequest(command="true", nodez=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="not both"):
        JobRequest(command="true", mem="1G", mem_per_cpu="1G")
    with pytest.raises(ValidationError, match="single lines"):
        JobRequest(command="true", name="a\nb")


def test_site_prologue_from_dev() -> None:
    site = load_site("dev")
    text = render_sbatch(JobRequest(command="hostname", partition="gpu"), site.prologue)
    assert "#SBATCH --partition=gpu" in text
