"""Shared fixtures. The `dev_cluster` fixture is the only way tests reach Slurm.

Tests that need Slurm are marked ``slurm`` and use ``dev_cluster``. When the
cluster is not running, the fixture starts it (as root) with
``scripts/dev-cluster up``; if that is impossible the test FAILS — it never
skips — so a CI run cannot pass without exercising the real Slurm.

``HPCORCH_DEV_CLUSTER_SLURM`` (read at the edge; ``scripts/check-releases`` sets it)
picks the Slurm release the cluster runs: 22.05 (default, the host's) or a
newer one, whose Slurm clients and Python live in a Debian root: pytest must
then run inside it (``scripts/dev-cluster exec --slurm 24.11 -- pytest ...``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEV_CLUSTER = REPO / "scripts" / "dev-cluster"
DEFAULT_SLURM = "22.05"
TEST_SLURM = os.environ.get("HPCORCH_DEV_CLUSTER_SLURM", DEFAULT_SLURM)
# Set by scripts/dev-cluster in every process it runs inside a release root.
IN_ROOT = os.environ.get("HPCORCH_DEV_CLUSTER_IN_ROOT")


@dataclass(frozen=True)
class DevCluster:
    """What a client needs to reach one dev cluster."""

    name: str
    env: dict[str, str]
    """SLURM_CONF, SLURMRESTD_URL, SLURM_JWT (and HPCORCH_DEV_CLUSTER_NAME)."""
    script: Path = field(default=DEV_CLUSTER)

    @property
    def slurm_conf(self) -> str:
        return self.env["SLURM_CONF"]

    @property
    def rest_url(self) -> str:
        return self.env["SLURMRESTD_URL"]

    @property
    def jwt(self) -> str:
        return self.env["SLURM_JWT"]

    def cli_env(self) -> dict[str, str]:
        """Environment for Slurm commands: SLURM_CONF set, SLURM_JWT removed.

        Slurm 22.05's slurmd has no auth/jwt, so srun (and jobs that call srun)
        break when SLURM_JWT is in their environment.
        """
        env = {k: v for k, v in os.environ.items() if k != "SLURM_JWT"}
        env["SLURM_CONF"] = self.slurm_conf
        return env

    def run(
        self, *argv: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run a Slurm command (or any argv) against this cluster."""
        return subprocess.run(
            list(argv),
            env=self.cli_env(),
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def script_cmd(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``scripts/dev-cluster ARGS --name NAME``."""
        return subprocess.run(
            [sys.executable, str(self.script), *args, "--name", self.name],
            capture_output=True,
            text=True,
            check=check,
            timeout=300,
        )


def _parse_env(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("export ") and "=" in line:
            key, value = line[len("export ") :].split("=", 1)
            env[key] = value
    return env


def cluster_args(name: str | None, slurm: str = TEST_SLURM, exact: bool = False) -> list[str]:
    """dev-cluster options for cluster NAME of release SLURM (None: the release's own cluster).

    Extra clusters of a newer release get the release in their name (dev2 -> dev22411), so
    they never meet a 22.05 cluster of the same name; EXACT keeps NAME as it is.
    """
    if slurm != DEFAULT_SLURM and slurm != IN_ROOT:
        pytest.fail(
            f"HPCORCH_DEV_CLUSTER_SLURM={slurm}: run pytest inside that release's root, e.g. "
            f"scripts/dev-cluster exec --slurm {slurm} -- pytest ... (or scripts/check-releases)",
            pytrace=False,
        )
    if slurm == DEFAULT_SLURM or exact:
        return ["--name", name or "dev"]
    suffix = slurm.replace(".", "")
    return ["--slurm", slurm, *(["--name", f"{name}{suffix}"] if name else [])]


def ensure_dev_cluster(name: str | None = None, *, exact: bool = False) -> DevCluster:
    """Return the running cluster NAME (None: the tested release's own), starting it if
    needed; fail (never skip) otherwise."""
    args = cluster_args(name, exact=exact)
    shown = " ".join(args)
    status = subprocess.run(
        [sys.executable, str(DEV_CLUSTER), "status", *args],
        capture_output=True,
        check=False,
        text=True,
    )
    if status.returncode != 0:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            pytest.fail(
                f"the dev cluster {name!r} is not running and cannot be started here: "
                f"run `sudo scripts/dev-cluster up {shown}` first\n{status.stdout}",
                pytrace=False,
            )
        up = subprocess.run(
            [sys.executable, str(DEV_CLUSTER), "up", *args],
            capture_output=True,
            check=False,
            text=True,
            timeout=900,
        )
        if up.returncode != 0:
            pytest.fail(f"scripts/dev-cluster up failed:\n{up.stderr[-4000:]}", pytrace=False)
    env = subprocess.run(
        [sys.executable, str(DEV_CLUSTER), "env", *args],
        capture_output=True,
        check=False,
        text=True,
    )
    if env.returncode != 0:
        pytest.fail(f"scripts/dev-cluster env failed:\n{env.stderr}", pytrace=False)
    parsed = _parse_env(env.stdout)
    return DevCluster(name=parsed["HPCORCH_DEV_CLUSTER_NAME"], env=parsed)


@pytest.fixture(scope="session")
def dev_cluster() -> Iterator[DevCluster]:
    """The real dev Slurm cluster. Sets SLURM_CONF and SLURMRESTD_URL in os.environ
    (not SLURM_JWT: see DevCluster.cli_env); the token is ``dev_cluster.jwt``."""
    # `scripts/dev-cluster exec --name dev2411 -- pytest ...` names the cluster to test.
    named = os.environ.get("HPCORCH_DEV_CLUSTER_NAME")
    cluster = ensure_dev_cluster(named, exact=True) if named else ensure_dev_cluster()
    saved = {k: os.environ.get(k) for k in ("SLURM_CONF", "SLURMRESTD_URL")}
    os.environ["SLURM_CONF"] = cluster.slurm_conf
    os.environ["SLURMRESTD_URL"] = cluster.rest_url
    os.environ.pop("SLURM_JWT", None)
    yield cluster
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Anything under tests/integration talks to the real cluster: mark it so `-m "not slurm"`
    # gives the fast unit suite.
    for item in items:
        if "tests/integration" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.slurm)
