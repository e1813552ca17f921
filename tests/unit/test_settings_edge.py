"""Settings come in at the edges: only :mod:`hpcorch.environment` reads ``HPCORCH_*`` settings.

Below the edges a setting travels in :class:`~hpcorch.options.RunOptions`. Other
modules may read the environment only for what is not a setting: the Slurm job a
process runs in, the devices it may use, or the environment a child process
(a Slurm job, a task, an srun step) inherits. Each such module is listed here with
its reason; a new reader must be added here, with one, or go through the edge.
"""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "hpcorch"

EDGE = "environment.py"
"""The one module that reads hpcorch's settings from the environment."""

ALLOWED = {
    "doctor.py": "hands the caller's environment to the Slurm commands it checks",
    "engine/driverlock.py": "the Slurm job the driver runs in, recorded with the run's lock",
    "engine/monitor.py": "whoami() on a worker: its node, Slurm job and that job's HPCORCH_SITE",
    "engine/cancel.py": "the Slurm job the driver itself runs in (never cancelled with the run)",
    "engine/worker.py": "a task's environment, and the Slurm job and GPUs of its worker",
    "gpu.py": "CUDA_VISIBLE_DEVICES: whether this process may use a GPU",
    "mpi_bind.py": "each MPI rank's GPU binding, from its Slurm step's variables",
    "placement/placing.py": "the partition of the Slurm job a worker runs in",
    "placement/plugin.py": "a worker's node, GPUs and slurm.conf, and its tasks' environment",
    "provision/inside.py": "the user's allocation (SLURM_JOB_*) and the srun steps' environment",
    "provision/reaper.py": "removes secrets from a worker's own environment before tasks run",
    "provision/slurm_pool.py": "the secret names the worker job's sbatch must unset (env -u)",
    "torch_run.py": "each training rank's torchrun variables, from its Slurm step's",
    "torchdist.py": "RANK/WORLD_SIZE: which rank of a training this process is",
    "sites/detect.py": "the environment of the Slurm commands that detect a site",
    "sites/loader.py": "${VAR} references in site files",
    "sites/resolve.py": "CUDA_VISIBLE_DEVICES: the GPUs this machine gives the local site",
    "slurm/cli.py": "the environment of the Slurm commands it runs",
    "slurm/connect.py": "the environment of the Slurm clients it builds (SLURM_CONF, token)",
    "slurm/pyslurm_.py": "the environment a pyslurm-submitted job inherits, as sbatch's would",
    "slurm/rest.py": "the environment a REST-submitted job inherits, as sbatch's would",
    "slurm/token.py": "SLURM_JWT, the token slurmrestd wants",
}

_READ = re.compile(r"\bos\.environ\b|\bgetenv\(|\benviron\b\s*\[")
_SETTING = re.compile(r"""["'](HPCORCH_[A-Z_]+)["']""")
# Names other modules may use: set for a child (a job's prologue, a task's environment), or
# read on a worker as its job's identity (HPCORCH_SITE), never as a setting.
_NOT_SETTINGS = {
    "HPCORCH_SITE",
    "HPCORCH_RUN_ID",
    "HPCORCH_TASK_ID",
    "HPCORCH_ATTEMPT",
    "HPCORCH_RUN_DIR",
    "HPCORCH_NODE",
    "HPCORCH_CORES",
    "HPCORCH_GPUS",
    # set by a training's worker for its ranks (hpcorch.training), read through the edge
    "HPCORCH_TORCH_BACKEND",
    "HPCORCH_CHECKPOINT_DIR",
    "HPCORCH_CHECKPOINT",
    "HPCORCH_GPU_USAGE_DIR",  # where each rank writes its GPUs' NVML figures
}


def _modules() -> dict[str, str]:
    return {
        p.relative_to(PACKAGE).as_posix(): p.read_text()
        for p in sorted(PACKAGE.rglob("*.py"))
        if p.relative_to(PACKAGE).as_posix() != EDGE
    }


def _code(text: str) -> str:
    # Docstrings and comments may name the variables; only code reads them.
    out = re.sub(r'"""(.|\n)*?"""', "", text)
    return "\n".join(line.split("#", 1)[0] for line in out.splitlines())


def test_only_the_allowed_modules_read_the_environment() -> None:
    readers = {name for name, text in _modules().items() if _READ.search(_code(text))}
    unexplained = readers - set(ALLOWED)
    assert not unexplained, (
        f"{sorted(unexplained)} read os.environ: take settings from RunOptions "
        f"(hpcorch/{EDGE} reads the environment), or add the module to ALLOWED with its reason"
    )
    stale = set(ALLOWED) - readers
    assert not stale, f"{sorted(stale)} no longer read the environment: drop them from ALLOWED"


def test_no_hpcorch_setting_is_named_outside_the_edge() -> None:
    named = {
        (name, var)
        for name, text in _modules().items()
        for var in _SETTING.findall(_code(text))
        if var not in _NOT_SETTINGS
    }
    # The CLI's help text and error messages name the variables the edge reads.
    named = {(n, v) for n, v in named if not n.startswith("cli/")}
    assert not named, f"settings read outside hpcorch/{EDGE}: {sorted(named)}"
