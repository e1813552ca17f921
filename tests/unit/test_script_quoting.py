"""Values that reach a job script are quoted, or refused where they cannot be.

Each script is rendered with hostile values, checked with ``bash -n``, and its
environment part executed under bash: a marker file proves nothing was evaluated,
and every value arrives exactly as written.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from distributed.security import Security
from pydantic import ValidationError

from hpcorch.engine.rundir import new_run_dir
from hpcorch.errors import SiteConfigError, SpecError
from hpcorch.provision.slurm_pool import _job_class, job_options, plan_pools
from hpcorch.sites import load_site
from hpcorch.sites.loader import parse_site
from hpcorch.sites.model import Prologue, Site
from hpcorch.slurm.script import JobRequest, render_sbatch, request_from_script
from hpcorch.spec import parse_workflow


def _hostile(marker: Path) -> list[str]:
    return [
        f"$(touch {marker})",
        f"`touch {marker}`",
        f"a\nb; touch {marker}",
        "with space",
        "quo'te\"s",
        f"${{IFS}}x;touch {marker}",
        f"\\$(touch {marker})",
        f"'; touch {marker}; '",
    ]


def _prologue(marker: Path) -> Prologue:
    values = _hostile(marker)
    # module names are single lines (the site model refuses others), env values anything
    modules = tuple(v for v in values if "\n" not in v)
    return Prologue(modules=modules, env={f"V{i}": v for i, v in enumerate(values)})


def _run_env_part(lines: list[str], tmp_path: Path) -> dict[str, str]:
    """Run the script lines under bash, with ``module`` a no-op; return the environment."""
    body = "\n".join(["module() { :; }", *lines, "env -0"])
    subprocess.run(["bash", "-n"], input=body, text=True, check=True)  # syntax only
    proc = subprocess.run(
        ["bash"], input=body, capture_output=True, text=True, cwd=tmp_path, check=True
    )
    pairs = (item.split("=", 1) for item in proc.stdout.split("\0") if "=" in item)
    return dict(pairs)


def test_sbatch_script_quotes_prologue_env_and_chdir(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    values = _hostile(marker)
    req = JobRequest(
        command=("true",),
        chdir=str(tmp_path / "dir with space"),
        comment="a comment with $(touch it)",
        env={f"E{i}": v for i, v in enumerate(values)},
    )
    script = render_sbatch(req, _prologue(marker))
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)  # syntax only
    body = script.splitlines()
    env = _run_env_part([ln for ln in body[1:-1] if not ln.startswith("#")], tmp_path)
    assert not marker.exists(), "a value was evaluated by the shell"
    for i, v in enumerate(values):
        assert env[f"V{i}"] == v and env[f"E{i}"] == v
    # what sbatch reads back (the REST backend parses the same lines)
    back = request_from_script(script)
    assert back.chdir == str(tmp_path / "dir with space")
    assert back.comment == "a comment with $(touch it)"


@pytest.mark.parametrize(
    "field", [{"chdir": "/a\nb"}, {"chdir": '/a"b'}, {"output": "o\r"}, {"name": "x\0"}]
)
def test_sbatch_values_no_directive_can_hold_are_refused(field: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="single lines"):
        JobRequest(command="true", **field)


def test_sbatch_env_names_are_checked() -> None:
    with pytest.raises(ValidationError, match="not valid"):
        JobRequest(command="true", env={"A=B": "x"})


def test_worker_script_quotes_site_prologue(tmp_path: Path) -> None:
    """The dask-jobqueue worker script: the prologue rendered as in sbatch scripts,
    run directory and TLS paths as plain words, nothing evaluated."""
    marker = tmp_path / "pwned"
    dev = load_site("dev")
    site = dev.model_copy(update={"prologue": _prologue(marker)})
    spec = parse_workflow({"tasks": [{"id": "a", "command": ["true"]}]})
    (plan,) = plan_pools(spec, site)
    run_dir = tmp_path / "run"
    opts = job_options(plan, site, run_dir)
    tls = run_dir / "tls"
    security = Security(  # type: ignore[no-untyped-call]
        tls_ca_file=str(tls / "ca.pem"),
        tls_worker_cert=str(tls / "cert.pem"),
        tls_worker_key=str(tls / "key.pem"),
        require_encryption=True,
    )
    job = _job_class(site)(scheduler="tls://127.0.0.1:1", name="w", security=security, **opts)
    script = job.job_script()
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)  # syntax only
    lines = script.splitlines()
    worker = next(i for i, ln in enumerate(lines) if "distributed.cli.dask_worker" in ln)
    env = _run_env_part([ln for ln in lines[:worker] if not ln.startswith("#")], tmp_path)
    assert not marker.exists(), "a prologue value was evaluated by the shell"
    for i, v in enumerate(_hostile(marker)):
        assert env[f"V{i}"] == v
    assert env["HPCORCH_SITE"] == "dev" and "SLURM_JWT" not in env
    # the paths dask-jobqueue writes unquoted are single shell words
    assert f"--tls-ca-file {tls / 'ca.pem'} " in lines[worker] + " "
    assert f"#SBATCH -e {run_dir}/slurm/" in script


@pytest.mark.parametrize(
    "path",
    [
        "runs/$(touch pwn)",
        "runs/`id`",
        "runs/a b",
        "runs/a\nb",
        "runs/it's",
        "runs/%j",
        "-rf",
        "~/runs",
        "runs/$HOME",
    ],
)
def test_slurm_run_dir_must_be_a_plain_path(path: str) -> None:
    with pytest.raises(SpecError, match="cannot go into a Slurm job script"):
        new_run_dir("w", load_site("dev"), run_dir=path)
    # on site local nothing renders it into a script: any directory name works
    assert new_run_dir("w", load_site("local"), run_dir=path)[1] == Path(path)


@pytest.mark.parametrize(
    "run_id", ["../../../x", "/abs/path", "a\n", "a\nb", "$(touch pwn)", "`id`", ".hidden", ""]
)
def test_run_ids_are_plain(run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPCORCH_HOME", str(tmp_path))
    with pytest.raises(SpecError, match="run id"):
        new_run_dir("w", load_site("local"), run_id=run_id)
    assert not (tmp_path / "runs").exists()


def test_a_directory_with_a_journal_belongs_to_its_run(tmp_path: Path) -> None:
    (tmp_path / "journal.sqlite").write_bytes(b"")
    with pytest.raises(SpecError, match="hpcorch resume"):
        new_run_dir("w", load_site("local"), run_dir=tmp_path)


def _site_yaml(prologue: str) -> str:
    return (
        "name: s\nkind: slurm\nslurm: {backends: [cli]}\npartitions:\n"
        "  - {name: p, default: true, nodes: 1, node: {cores_per_socket: 1, memory: 1GiB}}\n"
        + prologue
    )


@pytest.mark.parametrize(
    ("prologue", "error"),
    [
        ("prologue: {env: {'A=B': x}}\n", "not an environment variable name"),
        ("prologue: {env: {'A': \"x\\0\"}}\n", "NUL"),
        ('prologue: {directives: ["--x=1\\n#SBATCH --y"]}\n', "single line"),
        ('prologue: {modules: ["m\\nrm -rf ~"]}\n', "single line"),
        ('dask: {local_directory: "/tmp\\necho hi"}\n', "single line"),
        ('account: "a\\nb"\n', "not a Slurm name"),
    ],
)
def test_site_values_for_scripts_are_single_lines(prologue: str, error: str) -> None:
    with pytest.raises(SiteConfigError, match=error):
        parse_site(_site_yaml(prologue))


def test_site_prologue_commands_stay_shell() -> None:
    site = parse_site(_site_yaml('prologue: {commands: ["if true; then\\n  :\\nfi"]}\n'))
    assert isinstance(site, Site) and site.prologue.commands == ("if true; then\n  :\nfi",)
