"""Software environments on the dev cluster, for real: a podman image, Lmod modules.

The image (Debian trixie, Python 3.13, a venv with distributed; the host is
bookworm with 3.11) is built once per machine by ``scripts/container-image``
and reused from its cache; no runtime is mocked. A command task runs in the
image; a function task runs in a pool whose workers start inside it; a
command task loads a test modulefile; a missing module is refused before
anything is submitted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from tests.integration.final_logs import final_log

HPCORCH = Path(sys.executable).with_name("hpcorch")

pytestmark = pytest.mark.slurm

# This VM's kernel refuses a container's rlimits above the caller's (podman asks for
# 1048576 open files) and crun refuses its hybrid cgroup layout: runc, and limits
# no higher than the job's.
HOST_FLAGS = ["--runtime=runc", "--ulimit=nofile=1024:1024", "--ulimit=nproc=4096:4096"]

PROBE = """
import json, sys

def where(path):
    info = {"executable": sys.executable, "version": list(sys.version_info[:2]),
            "os": open("/etc/os-release").read()}
    with open(path, "w") as fh:
        json.dump(info, fh)
    return info["executable"]
"""

MODULEFILE = (
    'setenv("HPCTEST_HOME", "/opt/hpctest")\nprepend_path("HPCTEST_PATH", "/opt/hpctest/bin")\n'
)


@pytest.fixture(scope="session")
def image() -> str:
    """The test image's name: built once per machine (minutes), imported from its cache."""
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed (apt-get install -y podman runc)")
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "container-image")],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.splitlines()[-2]


@pytest.fixture
def modulepath(tmp_path: Path) -> Iterator[Path]:
    if not Path("/etc/profile.d/lmod.sh").exists():
        pytest.fail("Lmod is not installed (apt-get install -y lmod)")
    root = tmp_path / "modulefiles"
    (root / "hpctest").mkdir(parents=True)
    (root / "hpctest" / "1.0.lua").write_text(MODULEFILE)
    yield root


def _hpcorch(
    cluster: Any, *argv: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HPCORCH), *argv],
        cwd=cwd,
        env={**cluster.cli_env(), **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def _host_os() -> str:
    return Path("/etc/os-release").read_text()


def test_command_task_in_image_and_modules(
    dev_cluster: Any, image: str, modulepath: Path, tmp_path: Path
) -> None:
    container = {"runtime": "podman", "image": image, "flags": HOST_FLAGS}
    show = "import os; print(os.environ['HPCTEST_HOME'], os.environ['SETUP_SAW'], os.environ['E'])"
    tasks = [
        {"id": "os", "command": ["cat", "/etc/os-release"], "container": container},
        {
            "id": "mod",
            "command": ["python3", "-c", show],
            "modules": ["hpctest/1.0"],
            "module_purge": True,
            "setup": 'export SETUP_SAW="$HPCTEST_PATH"',
            "env": {"E": "it's $HOME"},
        },
    ]
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(yaml.safe_dump({"tasks": tasks}))
    run_dir = tmp_path / "run"
    proc = _hpcorch(
        dev_cluster,
        *("run", str(workflow), "--site", "dev", "--run-dir", str(run_dir)),
        cwd=tmp_path,
        env={"MODULEPATH": str(modulepath)},
    )
    assert proc.returncode == 0, proc.stderr
    seen = final_log(run_dir, "os")
    assert "VERSION_CODENAME=trixie" in seen and seen != _host_os()
    assert final_log(run_dir, "mod") == ("/opt/hpctest /opt/hpctest/bin it's $HOME\n")


def test_mpi_ranks_each_start_in_the_image(dev_cluster: Any, image: str, tmp_path: Path) -> None:
    """The hybrid model: srun starts 2 nodes x 2 ranks, each rank its own container."""
    show = 'echo "$SLURM_PROCID $SLURM_NODEID $(grep ^VERSION_CODENAME= /etc/os-release)"'
    task = {
        "id": "ranks",
        "command": ["sh", "-c", show],
        "mpi": {"ranks": 4, "ranks_per_node": 2},
        "container": {"runtime": "podman", "image": image, "flags": HOST_FLAGS},
        "resources": {"walltime": "2m"},
    }
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(yaml.safe_dump({"tasks": [task]}))
    run_dir = tmp_path / "run"
    proc = _hpcorch(
        dev_cluster,
        *("run", str(workflow), "--site", "dev", "--run-dir", str(run_dir)),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    lines = sorted(final_log(run_dir, "ranks").splitlines())
    assert lines == [
        "0 0 VERSION_CODENAME=trixie",
        "1 0 VERSION_CODENAME=trixie",
        "2 1 VERSION_CODENAME=trixie",
        "3 1 VERSION_CODENAME=trixie",
    ]


def test_missing_module_is_refused_before_submission(
    dev_cluster: Any, modulepath: Path, tmp_path: Path
) -> None:
    workflow = tmp_path / "wf.yaml"
    tasks = [{"id": "m", "command": ["true"], "modules": ["hpctest/1.0", "nosuch/2.1"]}]
    workflow.write_text(yaml.safe_dump({"tasks": tasks}))
    before = dev_cluster.run("squeue", "-h", "-o", "%i").stdout
    proc = _hpcorch(
        dev_cluster,
        *("run", str(workflow), "--site", "dev", "--run-dir", str(tmp_path / "run")),
        cwd=tmp_path,
        env={"MODULEPATH": str(modulepath)},
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "'nosuch/2.1'" in proc.stderr, proc.stderr
    assert not (tmp_path / "run").exists()
    assert dev_cluster.run("squeue", "-h", "-o", "%i").stdout == before


def test_function_task_in_worker_inside_image(dev_cluster: Any, image: str, tmp_path: Path) -> None:
    (tmp_path / "ctprobe.py").write_text(PROBE)
    site = yaml.safe_load((REPO / "site-configs" / "dev.yaml").read_text())
    site["container"] = {
        "runtime": "podman",
        "image": image,
        "python": "/opt/venv/bin/python3",
        # hpcorch from this checkout, the probe module, and where it writes
        "binds": [
            f"{REPO / 'hpcorch'}:/opt/hpcorch/hpcorch:ro",
            f"{tmp_path / 'ctprobe.py'}:/opt/hpcorch/ctprobe.py:ro",
            str(tmp_path),
        ],
        "flags": HOST_FLAGS,
    }
    site_file = tmp_path / "dev-image.yaml"
    site_file.write_text(yaml.safe_dump(site))
    out = tmp_path / "where.json"
    workflow = tmp_path / "wf.yaml"
    task = {"id": "where", "function": "ctprobe:where", "args": [str(out)]}
    workflow.write_text(yaml.safe_dump({"tasks": [task]}))
    run_dir = tmp_path / "run"
    proc = _hpcorch(
        dev_cluster,
        *("run", str(workflow), "--site", str(site_file), "--run-dir", str(run_dir)),
        cwd=tmp_path,
        env={"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])},
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(out.read_text())
    assert info["executable"] == "/opt/venv/bin/python3"
    assert info["version"] == [3, 13] != list(sys.version_info[:2])
    assert "trixie" in info["os"] and info["os"] != _host_os()


def test_doctor_says_what_an_image_lacks(image: str, tmp_path: Path) -> None:
    def part(name: str, python: str) -> dict[str, Any]:
        container = {"runtime": "podman", "image": image, "python": python, "flags": HOST_FLAGS}
        container["binds"] = [f"{REPO / 'hpcorch'}:/opt/hpcorch/hpcorch:ro"]
        node = {"cores_per_socket": 2, "memory": "4GiB"}
        return {"name": name, "nodes": 1, "node": node, "container": container}

    site = {
        "name": "imgs",
        "kind": "local",
        "partitions": [part("venv", "/opt/venv/bin/python3"), part("bare", "/usr/bin/python3")],
    }
    site_file = tmp_path / "imgs.yaml"
    site_file.write_text(yaml.safe_dump(site))
    proc = subprocess.run(
        [str(HPCORCH), "doctor", "--site", str(site_file), "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    venv, bare = (
        checks["container image (partition venv)"],
        checks["container image (partition bare)"],
    )
    assert venv["status"] == "ok" and "Python 3.13 has distributed" in venv["detail"], venv
    assert bare["status"] == "fail" and "lacks distributed, hpcorch" in bare["detail"], bare
    assert proc.returncode == 2
