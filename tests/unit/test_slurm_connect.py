"""Building a site's client: backends in the site's order, slurm.conf expanded."""

from __future__ import annotations

import os

import pytest

from hpcorch.errors import SiteConfigError
from hpcorch.sites import load_site
from hpcorch.slurm.cli import CliClient
from hpcorch.slurm.connect import connect, slurm_conf_path
from hpcorch.slurm.fallback import FallbackClient
from hpcorch.slurm.rest import RestClient


def test_dev_site_is_rest_then_cli() -> None:
    env = {"SLURMRESTD_URL": "http://127.0.0.1:9", "PATH": os.environ.get("PATH", "")}
    client = connect(load_site("dev"), env)
    assert isinstance(client, FallbackClient)
    rest, cli = client.backends
    assert isinstance(rest, RestClient) and isinstance(cli, CliClient)
    assert rest.url == "http://127.0.0.1:9"
    client.close()


def test_slurm_conf_expansion(tmp_path: object) -> None:
    site = load_site("dev")
    assert slurm_conf_path(site, {"SLURM_CONF": "/etc/slurm/slurm.conf"}) == "/etc/slurm/slurm.conf"
    assert slurm_conf_path(site, {"HPCORCH_DEV_CLUSTER_DIR": "/x"}) == "/x/dev/etc/slurm.conf"
    default = slurm_conf_path(site, {})
    assert default is not None and default.endswith(".dev-cluster/dev/etc/slurm.conf")
    assert os.path.isabs(default)


def test_cli_only_site_and_local_site() -> None:
    assert isinstance(connect(load_site("frontier"), {}), CliClient)
    with pytest.raises(SiteConfigError, match="not a Slurm site"):
        connect(load_site("local"), {})
