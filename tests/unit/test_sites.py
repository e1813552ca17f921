"""Site configs: loading, search order, error messages, schema sync, jobqueue import."""

from __future__ import annotations

import json
from pathlib import Path

import dask.config
import jsonschema
import pytest
import yaml

from hpcorch.errors import SiteConfigError
from hpcorch.sites import (
    Site,
    expand_vars,
    list_sites,
    load_site,
    parse_site,
    schema_text,
    site_from_jobqueue,
)
from hpcorch.sites.loader import shipped_dir

SITE_CONFIGS = Path(__file__).resolve().parents[2] / "site-configs"
SHIPPED = sorted(p for p in SITE_CONFIGS.glob("*.yaml"))


def test_shipped_dir_is_the_checkout_copy() -> None:
    assert shipped_dir() == SITE_CONFIGS


def test_ships_local_dev_and_three_real_sites() -> None:
    names = {p.stem for p in SHIPPED}
    assert {"local", "dev"} <= names
    real = names - {"local", "dev"}
    assert len(real) >= 3
    for name in real:
        site = load_site(name)
        assert site.docs, f"{name} must cite the documentation its figures came from"
        text = (SITE_CONFIGS / f"{name}.yaml").read_text()
        assert "https://" in text.split("\nname:")[0], f"{name} needs a comment citing its source"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_files_validate_against_model_and_schema(path: Path) -> None:
    site = load_site(path)
    assert site.name == path.stem
    schema = json.loads((SITE_CONFIGS / "schema.json").read_text())
    jsonschema.validate(yaml.safe_load(path.read_text()), schema)


def test_committed_schema_matches_model() -> None:
    committed = (SITE_CONFIGS / "schema.json").read_text()
    assert committed == schema_text(), (
        "site-configs/schema.json is stale: run `hpcorch sites schema > site-configs/schema.json`"
    )


def test_schema_defaults_match_model_defaults() -> None:
    schema = json.loads(schema_text())
    props = schema["$defs"]["NodeShape"]["properties"]
    assert props["sockets"]["default"] == 1
    assert schema["$defs"]["TokenSource"]["properties"]["env"]["default"] == "SLURM_JWT"
    # A minimal file gets exactly the model's defaults.
    site = parse_site(
        "name: x\nkind: local\npartitions: [{name: p, nodes: 1, node: {memory: 1G}}]\n"
    )
    assert site.mpi.launcher == tuple(
        schema["$defs"]["MpiSettings"]["properties"]["launcher"]["default"]
    )


def test_dev_matches_dev_cluster_shape() -> None:
    dev = load_site("dev")
    assert dev.slurm is not None and dev.slurm.cluster == "dev"
    cpu, gpu = dev.partition("cpu"), dev.partition("gpu")
    assert dev.partition() is cpu
    assert (cpu.nodes, cpu.node.sockets, cpu.node.cores_per_socket) == (2, 2, 4)
    assert cpu.node.memory == 8000 * 1024**2
    assert (gpu.node.gpus, gpu.node.gpu_type) == (4, "sim")
    assert gpu.node.gpu_sockets == (0, 0, 1, 1)
    assert gpu.node.nvlinks == ((0, 1), (2, 3))
    assert dev.mpi.launcher == ("srun", "--mpi=pmix")


BROKEN = """\
name: broken
kind: slurm
slurm: {backends: [cli]}
partitions:
  - name: a
    nodes: 1
    node: {memory: 1G}
  - name: b
    nodes: 1
    node: {memory: 1G, cores_per_socket: zero}
"""


def test_error_names_file_key_path_and_expectation(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    with pytest.raises(SiteConfigError) as info:
        load_site(path)
    message = str(info.value)
    assert str(path) in message
    assert "partitions[1].node.cores_per_socket" in message
    assert "integer" in message
    assert info.value.exit_code == 2


def test_unknown_key_lists_valid_keys(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(BROKEN.replace("zero", "4").replace("{memory: 1G}", "{memory: 1G, gpuz: 2}", 1))
    with pytest.raises(SiteConfigError) as info:
        load_site(path)
    message = str(info.value)
    assert "partitions[0].node.gpuz: unknown key" in message
    assert "cores_per_socket" in message and "nvlinks" in message


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nkind: [local\n")
    with pytest.raises(SiteConfigError, match=r"bad\.yaml:\d+:\d+: not valid YAML"):
        load_site(path)


def test_cross_field_checks() -> None:
    with pytest.raises(SiteConfigError, match=r"partitions\[0\]\.node: gpu_sockets"):
        parse_site(
            "name: x\nkind: local\npartitions: [{name: p, nodes: 1, node: "
            "{memory: 1G, gpus: 2, gpu_sockets: [0]}}]\n"
        )
    with pytest.raises(SiteConfigError, match="slurm"):
        parse_site("name: x\nkind: slurm\npartitions: [{name: p, nodes: 1, node: {memory: 1G}}]\n")


def test_search_order_env_path_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    override = tmp_path / "dev.yaml"
    override.write_text(
        "name: dev\nkind: local\npartitions: [{name: only, nodes: 1, node: {memory: 1G}}]\n"
    )
    monkeypatch.setenv("HPCORCH_SITE_PATH", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "none"))
    assert list_sites()["dev"] == override
    assert load_site("dev").names() == ["only"]
    assert "frontier" in list_sites()


def test_user_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sites = tmp_path / "hpcorch" / "sites"
    sites.mkdir(parents=True)
    (sites / "mine.yml").write_text(
        "name: mine\nkind: local\npartitions: [{name: p, nodes: 1, node: {memory: 1G}}]\n"
    )
    monkeypatch.delenv("HPCORCH_SITE_PATH", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert load_site("mine").name == "mine"


def test_unknown_site_says_where_it_looked() -> None:
    with pytest.raises(SiteConfigError, match=r"unknown site 'nope'.*known sites:.*dev"):
        load_site("nope")


def test_expand_vars() -> None:
    env = {"A": "/a", "EMPTY": ""}
    assert expand_vars("${A}/x", env) == "/a/x"
    assert expand_vars("${B:-/b}/x", env) == "/b/x"
    assert expand_vars("${EMPTY:-${A}}/x", env) == "/a/x"
    assert expand_vars("${B:-${C:-.dev}}/etc", env) == ".dev/etc"
    assert expand_vars("$HOME stays", env) == "$HOME stays"


def test_jobqueue_import_from_file(tmp_path: Path) -> None:
    path = tmp_path / "jobqueue.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "jobqueue": {
                    "slurm": {
                        "cores": 36,
                        "memory": "120GB",
                        "queue": "regular",
                        "account": "m1234",
                        "walltime": "02:00:00",
                        "interface": "ib0",
                        "job-script-prologue": ["module load python"],
                        "job-extra-directives": ["--constraint=cpu"],
                    }
                }
            }
        )
    )
    site = site_from_jobqueue(path, name="mycluster")
    assert isinstance(site, Site)
    part = site.partition()
    assert part.name == "regular" and part.node.cores == 36
    assert part.node.memory == 120 * 1000**3
    assert part.max_walltime_s == 7200
    assert site.account == "m1234" and site.dask.interface == "ib0"
    assert site.prologue.commands == ("module load python",)
    assert site.prologue.directives == ("--constraint=cpu",)


def test_jobqueue_import_from_dask_config() -> None:

    with dask.config.set({"jobqueue.slurm.cores": 4, "jobqueue.slurm.memory": "8GiB"}):
        site = site_from_jobqueue()
    assert site.partition().node.memory == 8 * 1024**3


def test_jobqueue_import_needs_shape() -> None:
    with pytest.raises(SiteConfigError, match="cores and memory"):
        site_from_jobqueue({"jobqueue": {"slurm": {"queue": "x"}}})
