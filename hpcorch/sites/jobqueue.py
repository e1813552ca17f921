"""Import a dask-jobqueue ``jobqueue.slurm`` configuration as a site.

Users of dask-jobqueue already describe their cluster in
``~/.config/dask/jobqueue.yaml``; this turns that description into a
:class:`~hpcorch.sites.model.Site` so they need not write it twice. What
jobqueue cannot say (node count, sockets, GPUs) gets safe defaults that
``hpcorch sites detect`` can refine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hpcorch.errors import SiteConfigError
from hpcorch.sites.loader import format_validation_error
from hpcorch.sites.model import Site
from hpcorch.yamltext import load_yaml_text

__all__ = ["site_from_jobqueue"]


def _load(source: str | os.PathLike[str] | Mapping[str, Any] | None) -> tuple[dict[str, Any], str]:
    if source is None:
        import dask.config  # noqa: PLC0415  # CLI fast path: --help does not load it

        return dict(dask.config.get("jobqueue.slurm", default={}) or {}), "dask config"
    if isinstance(source, Mapping):
        data: Any = source
        name = "<mapping>"
    else:
        path = Path(source).expanduser()
        try:
            data = load_yaml_text(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise SiteConfigError(f"{path}: cannot read a jobqueue config: {exc}") from exc
        name = str(path)
    if isinstance(data, Mapping) and "jobqueue" in data:
        data = (data.get("jobqueue") or {}).get("slurm") or {}
    if not isinstance(data, Mapping):
        raise SiteConfigError(f"{name}: expected jobqueue: slurm: {{...}}")
    return dict(data), name


def site_from_jobqueue(
    source: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    *,
    name: str = "jobqueue",
    nodes: int = 1,
) -> Site:
    """Build a site from a jobqueue.yaml file, a mapping, or (None) the loaded dask config.

    ``cores``/``memory`` become the node shape of one default partition named
    after ``queue``; ``walltime`` its limit; ``job_script_prologue`` and
    ``job_extra_directives`` are kept in the prologue.
    """
    raw, where = _load(source)
    cfg = {k.replace("-", "_"): v for k, v in raw.items()}
    if not cfg.get("cores") or not cfg.get("memory"):
        raise SiteConfigError(
            f"{where}: jobqueue.slurm needs cores and memory to describe a node; "
            "add them or write a site file instead"
        )
    prologue = list(cfg.get("job_script_prologue") or cfg.get("env_extra") or [])
    data: dict[str, Any] = {
        "name": name,
        "kind": "slurm",
        "description": f"imported from dask-jobqueue config ({where})",
        "slurm": {"backends": ["cli"]},
        "account": cfg.get("account"),
        "partitions": [
            {
                "name": cfg.get("queue") or "default",
                "nodes": nodes,
                "default": True,
                "max_walltime_s": cfg.get("walltime"),
                "node": {
                    "sockets": 1,
                    "cores_per_socket": int(cfg["cores"]),
                    "memory": cfg["memory"],
                },
            }
        ],
        "prologue": {
            "commands": prologue,
            "directives": list(cfg.get("job_extra_directives") or cfg.get("job_extra") or []),
        },
        "dask": {
            "interface": cfg.get("interface"),
            "local_directory": cfg.get("local_directory"),
            "log_directory": cfg.get("log_directory"),
            "worker_extra_args": list(cfg.get("worker_extra_args") or []),
        },
    }
    try:
        return Site.model_validate(data)
    except ValidationError as exc:
        raise SiteConfigError(format_validation_error(exc, where, Site)) from None
