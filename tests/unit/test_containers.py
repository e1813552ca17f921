"""Containers, modules and per-task setup: the specs, the argv built (pure), the edge checks."""

from __future__ import annotations

import itertools
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from hpcorch.containers import TASK_ENV_NAMES, Container, check_container, container_argv
from hpcorch.engine.commands import SETUP_ARGV0, command_argv, failure_name, setup_script
from hpcorch.provision.slurm_pool import PoolPlan, job_options
from hpcorch.sites.model import Site
from hpcorch.spec import TaskSpec

HOSTILE = ["a b", "$HOME", "'q'", '"dq"', "`id`", "x;y", "*", "-n", "\\"]


def test_podman_argv_is_one_item_per_value() -> None:
    c = Container(
        runtime="podman",
        image="localhost/img:1",
        binds=("/data:/in:ro", "/scratch"),
        flags=("--security-opt=label=disable",),
    )
    argv = container_argv(c, ["cat", *HOSTILE], env_names=["MY_VAR"], workdir="/scratch/w")
    assert argv[:4] == ["podman", "run", "--rm", "--network=host"]
    assert argv[-len(HOSTILE) - 2 :] == ["localhost/img:1", "cat", *HOSTILE]
    pairs = list(itertools.pairwise(argv))
    assert ("--volume", "/data:/in:ro") in pairs
    assert ("--volume", "/scratch:/scratch") in pairs
    assert ("--workdir", "/scratch/w") in pairs
    assert ("--env", "MY_VAR") in pairs
    assert all(("--env", name) in pairs for name in TASK_ENV_NAMES)
    assert "--security-opt=label=disable" in argv
    assert not any("nvidia" in a for a in argv)  # no GPU unless the task holds GPUs


@pytest.mark.parametrize(
    ("runtime", "gpus", "expected"),
    [
        ("apptainer", "nvidia", ["--nv"]),
        ("apptainer", "amd", ["--rocm"]),
        ("podman", "nvidia", ["--device", "nvidia.com/gpu=all"]),
        ("podman", "amd", ["--device", "/dev/kfd", "--device", "/dev/dri"]),
        ("podman-hpc", "nvidia", ["--gpu"]),
        ("shifter", "nvidia", ["--module=gpu"]),
    ],
)
def test_gpu_pass_through_only_with_gpus(runtime: str, gpus: str, expected: list[str]) -> None:
    c = Container.model_validate({"runtime": runtime, "image": "/img.sif", "gpus": gpus})
    with_gpus = container_argv(c, ["nvidia-smi"], gpus=True)
    without = container_argv(c, ["nvidia-smi"])
    text = " ".join(with_gpus)
    assert " ".join(expected) in text
    assert all(flag not in without for flag in expected if flag.startswith("--"))


def test_apptainer_and_shifter_argv() -> None:
    app = Container(runtime="apptainer", image="/img/a.sif", binds=("/data:/in",))
    assert container_argv(app, ["python3", "-V"], workdir="/w", extra_binds=["/run"]) == [
        "apptainer", "exec", "--bind", "/data:/in", "--bind", "/run", "--pwd", "/w",
        "/img/a.sif", "python3", "-V",
    ]  # fmt: skip
    sh = Container(runtime="shifter", image="docker:site/img:1", binds=("/data:/in:ro",))
    assert container_argv(sh, ["ls"]) == [
        "shifter", "--image=docker:site/img:1", "--volume=/data:/in:ro", "--", "ls",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"runtime": "docker", "image": "x"}, "runtime 'docker' is not one hpcorch knows"),
        ({"runtime": "podman", "image": "docker://debian"}, "registry reference"),
        ({"runtime": "podman", "image": "-v"}, "must not start with '-'"),
        ({"runtime": "podman", "image": "a b"}, "neither a path nor an image name"),
        ({"runtime": "podman", "image": "x", "binds": ["rel:/d"]}, "absolute paths"),
        ({"runtime": "podman", "image": "x", "binds": ["/a:rel"]}, "absolute path"),
        ({"runtime": "podman", "image": "x", "binds": ["/a:/b:rx"]}, "ro or rw"),
        ({"runtime": "podman", "image": "x", "python": "python3 -I"}, "one program"),
        ({"runtime": "podman", "image": "x", "pull": True}, "unknown key 'pull'"),
    ],
)
def test_bad_containers(data: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError) as info:
        Container.model_validate(data)
    assert needle in str(info.value)


def test_check_container_names_the_missing_path(tmp_path: Path) -> None:
    image = tmp_path / "a.sif"
    c = Container(runtime="apptainer", image=str(image), binds=(f"{tmp_path}:/d",))
    with pytest.raises(ValueError, match=r"a\.sif' does not exist"):
        check_container(c, "task 'a'", runtime_here=False)
    image.write_bytes(b"")
    check_container(c, "task 'a'", runtime_here=False)
    gone = Container(runtime="apptainer", image=str(image), binds=("/nonexistent/x:/d",))
    with pytest.raises(ValueError, match="mounts '/nonexistent/x', which does not exist"):
        check_container(gone, "task 'a'", runtime_here=False)
    archive = Container(runtime="podman", image=f"oci-archive:{tmp_path}/none.tar")
    with pytest.raises(ValueError, match=r"none\.tar' does not exist"):
        check_container(archive, "task 'a'", runtime_here=False)


def test_command_without_environment_runs_as_given() -> None:
    task = TaskSpec(id="a", command=["echo", *HOSTILE])
    assert command_argv(task) == ("echo", *HOSTILE)
    assert setup_script(task) is None


def test_setup_runs_first_and_the_argv_stays_verbatim(tmp_path: Path) -> None:
    task = TaskSpec(
        id="a",
        command=[
            sys.executable,
            "-c",
            "import os, sys; print(os.environ['X'], sys.argv[1:])",
            *HOSTILE,
        ],
        setup="export X='set up'\ntest -n \"$X\"",
        env={"Y": "$(id)"},
    )
    argv = command_argv(task)
    assert argv[:2] == ("bash", "-c") and argv[3] == SETUP_ARGV0
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    assert out == f"set up {HOSTILE!r}\n"


def test_failing_setup_fails_the_attempt() -> None:
    task = TaskSpec(id="a", command=["echo", "ran"], setup="false\necho after")
    proc = subprocess.run(command_argv(task), capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and proc.stdout == ""


def test_modules_render_quoted_after_purge() -> None:
    task = TaskSpec(id="a", command=["true"], modules=["gcc/13.2", "py+x@1"], module_purge=True)
    script = setup_script(task)
    assert script is not None
    lines = script.splitlines()
    assert lines[0] == "set -e"
    assert lines[2:5] == ["module purge", "module load gcc/13.2", "module load py+x@1"]
    assert lines[-1] == 'exec "$@"'


def test_container_after_setup_in_one_argv(tmp_path: Path) -> None:
    c = Container(runtime="podman", image="localhost/img:1")
    task = TaskSpec(id="a", command=["cat", "/etc/os-release"], container=c, setup="true")
    argv = command_argv(task, str(tmp_path))
    at = argv.index("podman")
    assert argv[at : at + 3] == ("podman", "run", "--rm")
    assert ("--volume", f"{tmp_path}:{tmp_path}") in itertools.pairwise(argv)
    assert argv[-3:] == ("localhost/img:1", "cat", "/etc/os-release")


@pytest.mark.parametrize("key", ["container", "modules", "setup"])
def test_environment_keys_are_for_command_tasks(key: str) -> None:
    value: object = {"runtime": "podman", "image": "x"} if key == "container" else "x"
    if key == "modules":
        value = ["x"]
    with pytest.raises(ValueError, match="for command tasks only"):
        TaskSpec.model_validate({"id": "a", "function": "os:getcwd", key: value})


def _site(container: dict[str, object] | None, part_container: dict[str, object] | None) -> Site:
    part: dict[str, object] = {
        "name": "cpu",
        "nodes": 2,
        "node": {"cores_per_socket": 4, "memory": "8GiB", "gpus": 1},
        "gres": "gpu",
    }
    if part_container:
        part["container"] = part_container
    data: dict[str, object] = {
        "name": "s",
        "kind": "slurm",
        "slurm": {"backends": ["cli"]},
        "partitions": [part],
    }
    if container:
        data["container"] = container
    return Site.model_validate(data)


def test_pool_workers_start_in_the_sites_container(tmp_path: Path) -> None:
    plain = _site(None, None)
    plan = PoolPlan("cpu", plain.partitions[0], 1, 60.0, "s")
    assert job_options(plan, plain, tmp_path)["python"] == sys.executable
    site = _site(
        {"runtime": "podman", "image": "localhost/a:1", "python": "/opt/venv/bin/python"}, None
    )
    plan = PoolPlan("cpu", site.partitions[0], 1, 60.0, "s")
    argv = shlex.split(job_options(plan, site, tmp_path)["python"])
    assert argv[:2] == ["podman", "run"] and argv[-2:] == ["localhost/a:1", "/opt/venv/bin/python"]
    assert f"{tmp_path}:{tmp_path}" in argv  # the TLS keys and logs of the run
    assert "SLURM_*" in argv and "HPCORCH_SITE" in argv
    assert "nvidia.com/gpu=all" in argv  # the partition's nodes have a GPU
    over = _site(
        {"runtime": "podman", "image": "localhost/a:1"},
        {"runtime": "apptainer", "image": "/img/b.sif"},
    )
    plan = PoolPlan("cpu", over.partitions[0], 1, 60.0, "s")
    argv = shlex.split(job_options(plan, over, tmp_path)["python"])
    assert argv[:2] == ["apptainer", "exec"] and argv[-2:] == ["/img/b.sif", "python3"]


def test_pool_modules_load_after_the_sites(tmp_path: Path) -> None:
    site = Site.model_validate(
        {
            "name": "s",
            "kind": "slurm",
            "slurm": {"backends": ["cli"]},
            "prologue": {"modules": ["site/1"], "module_purge": True},
            "partitions": [
                {
                    "name": "cpu",
                    "nodes": 1,
                    "node": {"memory": "1GiB"},
                    "modules": ["pool mod/2"],
                }
            ],
        }
    )
    plan = PoolPlan("cpu", site.partitions[0], 1, 60.0, "s")
    lines = job_options(plan, site, tmp_path)["job_script_prologue"]
    loads = [line for line in lines if line.startswith("module ")]
    assert loads == ["module purge", "module load site/1", "module load 'pool mod/2'"]


def test_python_api_takes_the_new_keys() -> None:
    from hpcorch.api import Workflow  # noqa: PLC0415  # the API loads the engine

    wf = Workflow("w")
    wf.add(
        ["cat", "/etc/os-release"],
        id="a",
        container={"runtime": "podman", "image": "localhost/x:1"},
        modules=["gcc/13"],
        module_purge=True,
        setup="true",
    )
    task = wf.spec().task("a")
    assert task.container == Container(runtime="podman", image="localhost/x:1")
    assert task.modules == ("gcc/13",) and task.module_purge and task.setup == "true"


def test_failure_names_the_task_program_unless_the_wrapper_failed() -> None:
    podman = Container(runtime="podman", image="localhost/img:1")
    shifter = Container(runtime="shifter", image="img:1")
    assert failure_name(TaskSpec(id="a", command=["solve"])) == (None, ())
    assert failure_name(TaskSpec(id="a", command=["solve"], container=podman)) == (
        "solve",
        (125, 126, 127),
    )
    assert failure_name(TaskSpec(id="a", command=["solve"], setup="true")) == (
        "solve (or its setup)",
        (),
    )
    # shifter passes no exit code on that hpcorch can tell from its own: the wrapper is named
    assert failure_name(TaskSpec(id="a", command=["solve"], container=shifter)) == (None, ())
