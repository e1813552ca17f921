"""Build a site's Slurm client from its config: its backends, in its order, chained."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from hpcorch.childenv import child_env, site_secrets
from hpcorch.errors import BackendUnavailable, SiteConfigError
from hpcorch.sites.loader import expand_vars
from hpcorch.sites.model import Site
from hpcorch.slurm.cli import CliClient
from hpcorch.slurm.client import SlurmClient
from hpcorch.slurm.fallback import FallbackClient
from hpcorch.slurm.pyslurm_ import PyslurmClient
from hpcorch.slurm.rest import RestClient
from hpcorch.slurm.token import TokenProvider

__all__ = ["connect", "slurm_conf_path"]

logger = logging.getLogger(__name__)


def slurm_conf_path(site: Site, env: Mapping[str, str] | None = None) -> str | None:
    """The site's slurm.conf with ``${VAR}`` expanded (relative to the current directory)."""
    if site.slurm is None or not site.slurm.conf:
        return None
    return str(Path(expand_vars(site.slurm.conf, env)).expanduser().absolute())


def connect(site: Site, env: Mapping[str, str] | None = None) -> SlurmClient:
    """The client for ``site``: one backend, or a FallbackClient over several."""
    if site.kind != "slurm" or site.slurm is None:
        raise SiteConfigError(f"site {site.name!r} is not a Slurm site (kind: {site.kind})")
    environ = dict(os.environ if env is None else env)
    conf = slurm_conf_path(site, environ)
    # Jobs and commands get the environment without the site's token, whatever its name.
    jobs_env = child_env(environ, site_secrets(site))
    cli = CliClient(conf=conf, env=jobs_env, prologue=site.prologue)
    backends: list[SlurmClient] = []
    for kind in site.slurm.backends:
        if kind == "cli":
            backends.append(cli)
        elif kind == "rest" and site.slurm.rest is not None:
            rest = site.slurm.rest
            token_env = dict(environ)
            if conf:
                token_env["SLURM_CONF"] = conf  # `scontrol token` must reach the same cluster
            backends.append(
                RestClient(
                    expand_vars(rest.url, environ),
                    tokens=TokenProvider(rest.token, env=token_env),
                    user=rest.user,
                    api_version=rest.api_version,
                    timeout_s=rest.timeout_s,
                    prologue=site.prologue,
                    history=cli,
                    env=jobs_env,
                )
            )
        elif kind == "pyslurm":
            try:
                backends.append(PyslurmClient(site.slurm.version or cli.version, env=environ))
            except BackendUnavailable as exc:
                if len(site.slurm.backends) == 1:
                    raise
                logger.info("skipping the pyslurm backend: %s", exc)
    if len(backends) == 1:
        return backends[0]
    return FallbackClient(backends)
