"""hpcorch doctor: the pure checks on observed data, and the whole run on site local."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import pytest
from click.testing import CliRunner

from hpcorch.cli.main import cli
from hpcorch.doctor import (
    Check,
    check_account,
    check_backend,
    check_command,
    check_partitions,
    check_ports,
    exit_code,
    mpi_launcher,
    parse_assoc,
    probe_ports,
    run_doctor,
)
from hpcorch.errors import SlurmError
from hpcorch.sites.loader import load_site
from hpcorch.slurm.cli import Completed
from hpcorch.slurm.models import NodeInfo, PartitionInfo
from hpcorch.slurm.states import parse_node_state

MIB = 2**20


def dev_nodes(state: str = "idle", **changes: object) -> list[NodeInfo]:
    """The dev cluster's nodes as sinfo describes them."""
    nodes = []
    for name, part, gres in (
        ("cpu1", "cpu", ""),
        ("cpu2", "cpu", ""),
        ("gpu1", "gpu", "gpu:sim:4(S:0-1)"),
        ("gpu2", "gpu", "gpu:sim:4(S:0-1)"),
    ):
        fields: dict[str, object] = {
            "name": name,
            "status": parse_node_state(state),
            "partitions": (part,),
            "cpus": 8,
            "sockets": 2,
            "cores_per_socket": 4,
            "memory": 8000 * MIB,
            "gres": gres,
        }
        if name == "cpu1":
            fields.update(changes)
        nodes.append(NodeInfo(**fields))  # type: ignore[arg-type]
    return nodes


DEV_PARTITIONS = [
    PartitionInfo("cpu", ("cpu1", "cpu2"), default=True),
    PartitionInfo("gpu", ("gpu1", "gpu2")),
]


def by_name(checks: Sequence[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_exit_codes() -> None:
    ok = Check("a", "ok", "")
    warn = Check("b", "warn", "")
    config = Check("c", "fail", "", blame="config")
    infra = Check("d", "fail", "")
    assert exit_code([ok, warn]) == 0
    assert exit_code([ok, config]) == 2
    assert exit_code([config, infra]) == 3


def test_backend_ok_and_down() -> None:
    ok = check_backend("rest", "http://h:1", version="22.05.8", partitions=2)
    assert ok.status == "ok"
    assert "22.05.8" in ok.detail
    down = check_backend("rest", "http://h:1", error="connection refused")
    assert (down.status, down.blame) == ("fail", "infrastructure")
    assert down.fix is not None and "JWT" in down.fix


def test_partitions_match_the_dev_site() -> None:
    checks = check_partitions(load_site("dev"), DEV_PARTITIONS, dev_nodes())
    assert [(c.name, c.status) for c in checks] == [
        ("partition cpu", "ok"),
        ("partition gpu", "ok"),
    ]


def test_missing_partition_is_the_site_files_fault() -> None:
    checks = by_name(check_partitions(load_site("dev"), DEV_PARTITIONS[:1], dev_nodes()))
    gpu = checks["partition gpu"]
    assert (gpu.status, gpu.blame) == ("fail", "config")
    assert "['cpu']" in gpu.detail
    assert gpu.fix is not None and "sites detect" in gpu.fix


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"cores_per_socket": 2}, "2x2 cores, the site says 2x4"),
        ({"memory": 4000 * MIB}, "4000 MiB, the site says 8000 MiB"),
        ({"gres": "gpu:sim:2"}, "2 GPUs, the site says 0"),
    ],
)
def test_shape_mismatch(changes: dict[str, object], words: str) -> None:
    checks = by_name(check_partitions(load_site("dev"), DEV_PARTITIONS, dev_nodes(**changes)))
    cpu = checks["partition cpu"]
    assert (cpu.status, cpu.blame) == ("fail", "config")
    assert f"cpu1 has {words}" in cpu.detail


def test_limits_beyond_the_partitions_fail() -> None:
    dev = load_site("dev")
    cpu = dev.partitions[0].model_copy(update={"max_walltime_s": 7200.0, "max_nodes_per_job": 4})
    site = dev.model_copy(update={"partitions": (cpu, dev.partitions[1])})
    live = [
        PartitionInfo("cpu", ("cpu1", "cpu2"), max_time_s=3600.0, max_nodes_per_job=2),
        DEV_PARTITIONS[1],
    ]
    check = by_name(check_partitions(site, live, dev_nodes()))["partition cpu"]
    assert (check.status, check.blame) == ("fail", "config")
    assert "MaxTime is 3600 s, the site says max_walltime_s 7200 s" in check.detail
    assert "MaxNodes is 2, the site says 4" in check.detail


def test_fewer_nodes_than_claimed_fails_down_nodes_warn() -> None:
    short = [PartitionInfo("cpu", ("cpu1",)), DEV_PARTITIONS[1]]
    assert (
        by_name(check_partitions(load_site("dev"), short, dev_nodes()))["partition cpu"].status
        == "fail"
    )
    down = by_name(check_partitions(load_site("dev"), DEV_PARTITIONS, dev_nodes("down*")))
    assert down["partition cpu"].status == "warn"
    assert "0 usable" in down["partition cpu"].detail


def test_account() -> None:
    rows = parse_assoc("hpcorch|alice|\nhpcorch|alice|gpu\nother|bob|\n\n")
    assert rows[0] == ("hpcorch", "alice", "")
    site = load_site("dev")
    assert check_account(site, "alice", rows).status == "ok"
    assert check_account(site, "carol", rows).status == "fail"
    mine = site.model_copy(update={"account": "other"})
    wrong = check_account(mine, "alice", rows)
    assert (wrong.status, wrong.blame) == ("fail", "config")
    assert "['hpcorch']" in wrong.detail
    assert check_account(site, "alice", None, "sacctmgr: slurmdbd down").status == "warn"


def test_command_outcomes_and_fixes() -> None:
    argv = ["srun", "--mpi=pmix", "true"]
    assert check_command("mpi launcher", argv, Completed(0, "", "")).status == "ok"
    root = check_command(
        "mpi launcher",
        ["mpirun", "-n", "1", "true"],
        Completed(
            1, "", "-" * 70 + "\nmpirun has detected an attempt to run as root.\n" + "x" * 400
        ),
        required=False,
    )
    assert root.status == "warn"
    assert "OMPI_ALLOW_RUN_AS_ROOT" in (root.fix or "")
    assert "----" not in root.detail
    assert len(root.detail) < 300
    missing = check_command(
        "python on compute",
        ["srun", "python", "-c", "import hpcorch"],
        Completed(1, "", "ModuleNotFoundError: No module named 'hpcorch'"),
    )
    assert missing.status == "fail"
    assert "prologue" in (missing.fix or "")
    late = check_command(
        "python on compute",
        ["srun", "true"],
        None,
        "srun took more than 120s; slurmctld may be busy",
    )
    assert late.status == "fail"
    assert "less busy" in (late.fix or "")


def test_probe_ports_plain_and_tls() -> None:
    plain = probe_ports(None)
    assert plain.status == "ok"
    assert plain.detail.startswith("scheduler listened on tcp://")
    assert "TLS: ok (tls://" in plain.detail


def test_ports() -> None:
    assert check_ports("tcp://10.0.0.1:4000", None, "ok").status == "ok"
    bad = check_ports(None, "OSError: cannot bind", None)
    assert bad.status == "fail"
    assert "dask.interface" in (bad.fix or "")


def _fake_runner(outcomes: Mapping[str, Completed | Exception]):  # type: ignore[no-untyped-def]
    calls: list[list[str]] = []

    def run(argv: Sequence[str], stdin: str | None, env: Mapping[str, str], timeout: float):  # type: ignore[no-untyped-def]
        calls.append(list(argv))
        outcome = outcomes[argv[0].rsplit("/", 1)[-1]]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    run.calls = calls  # type: ignore[attr-defined]
    return run


def test_run_doctor_local_with_fakes() -> None:
    runner = _fake_runner(
        {"python": Completed(0, "0.1.0\n", ""), "python3": Completed(0, "0.1.0\n", ""),
         "mpirun": SlurmError("mpirun took more than 120s; slurmctld may be busy")}
    )  # fmt: skip
    checks = run_doctor(
        load_site("local"),
        runner=runner,
        probe=lambda iface, tls: check_ports("tcp://x:1", None, "-"),
    )
    assert [(c.name, c.status) for c in checks] == [
        ("dask ports", "ok"),
        ("python", "ok"),
        ("mpi launcher", "warn"),
    ]
    assert exit_code(checks) == 0
    assert runner.calls[-1] == ["mpirun", "-n", "1", "true"]  # type: ignore[attr-defined]


def test_mpi_launcher_falls_back_where_srun_lacks_pmix() -> None:
    site = load_site("dev")
    without = _fake_runner({"srun": Completed(0, "MPI plugin types are...\n\tnone\n\tpmi2\n", "")})
    assert mpi_launcher(site, without, {}) == ("mpirun",)
    assert without.calls == [["srun", "--mpi=list"]]  # type: ignore[attr-defined]
    listing = "MPI plugin types are...\n\tpmix\n\tnone\n\tpmi2\n"
    with_pmix = _fake_runner({"srun": Completed(0, listing, "")})
    assert mpi_launcher(site, with_pmix, {}) == ("srun", "--mpi=pmix")
    broken = _fake_runner({"srun": SlurmError("srun took more than 30s")})
    assert mpi_launcher(site, broken, {}) == ("srun", "--mpi=pmix")


def test_doctor_cli_on_local() -> None:
    result = CliRunner().invoke(cli, ["doctor", "--site", "local", "--json"])
    data = json.loads(result.stdout)
    assert data["site"] == "local"
    statuses = {c["name"]: c["status"] for c in data["checks"]}
    assert statuses["dask ports"] == "ok"
    assert statuses["python"] == "ok"
    assert statuses["mpi launcher"] in ("ok", "warn")  # mpirun refuses root; MPI is optional
    assert result.exit_code == data["exit_code"] == 0


def test_doctor_cli_text_and_unknown_site() -> None:
    result = CliRunner().invoke(cli, ["doctor", "--site", "local"])
    assert result.exit_code == 0
    assert "dask ports" in result.stdout
    unknown = CliRunner().invoke(cli, ["doctor", "--site", "no-such-site"])
    assert unknown.exit_code == 2
    assert unknown.stderr.startswith("hpcorch: error: ")
