"""`hpcorch sites ...` through the real entry point (exit codes as users see them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hpcorch.sites import load_site, parse_site
from hpcorch.sites.detect import build_site, site_to_yaml

DATA = Path(__file__).parent / "data" / "slurm-22.05"


def hpcorch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from hpcorch.cli.main import main; main()", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_validate_broken_file_exits_2_with_file_key_and_expectation(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(
        "name: b\nkind: local\npartitions:\n  - {name: a, nodes: 1, node: {memory: 1G}}\n"
        "  - {name: c, nodes: 1, node: {memory: 1G, cores_per_socket: many}}\n"
    )
    done = hpcorch("sites", "validate", str(path))
    assert done.returncode == 2
    assert str(path) in done.stderr
    assert "partitions[1].node.cores_per_socket" in done.stderr
    assert "valid integer" in done.stderr


def test_validate_good_file(tmp_path: Path) -> None:
    done = hpcorch("sites", "validate", "site-configs/dev.yaml")
    assert done.returncode == 0, done.stderr
    assert "ok" in done.stdout


def test_list_show_schema() -> None:
    listed = hpcorch("sites", "list")
    assert listed.returncode == 0 and "frontier" in listed.stdout
    shown = hpcorch("sites", "show", "dev")
    assert shown.returncode == 0 and "gpu_sockets" in shown.stdout
    assert hpcorch("sites", "show", "nope").returncode == 2
    schema = json.loads(hpcorch("sites", "schema").stdout)
    assert schema["title"] == "Site"


def test_import_jobqueue_prints_a_valid_site(tmp_path: Path) -> None:
    path = tmp_path / "jobqueue.yaml"
    path.write_text("jobqueue:\n  slurm:\n    cores: 8\n    memory: 16GB\n    queue: normal\n")
    done = hpcorch("sites", "import-jobqueue", str(path), "--name", "mine")
    assert done.returncode == 0, done.stderr
    site = parse_site(done.stdout)
    assert site.name == "mine" and site.partition().name == "normal"


def test_build_site_from_recorded_dev_cluster_reproduces_dev_yaml() -> None:
    detected = build_site(
        partitions_text=(DATA / "scontrol_partitions.txt").read_text(),
        nodes_text=(DATA / "scontrol_nodes.txt").read_text(),
        config_text="ClusterName = dev\nMaxArraySize = 1001\nSLURM_VERSION = 22.05.8\n",
        gres_conf=(DATA / "gres.conf").read_text(),
        mpi_list="MPI plugin types are...\n\tnone\n\tpmix\n",
    )
    dev = load_site("dev")
    assert detected.name == "dev"
    assert detected.partitions == dev.partitions
    assert detected.limits == dev.limits
    assert detected.mpi == dev.mpi
    # The YAML it prints loads back to the same site.
    assert parse_site(site_to_yaml(detected)) == detected


@pytest.mark.parametrize("name", ["dev", "frontier", "perlmutter"])
def test_site_to_yaml_round_trips(name: str) -> None:
    site = load_site(name)
    assert parse_site(site_to_yaml(site)) == site
