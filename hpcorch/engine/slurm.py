"""Slurm sites: one dask-jobqueue worker pool per resource class, behind one TLS scheduler."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpcorch.errors import BackendUnavailable
from hpcorch.sites.model import Site
from hpcorch.spec import WorkflowSpec

__all__ = ["SlurmBackend"]


class SlurmBackend:
    def __init__(self, site: Site, spec: WorkflowSpec, run_dir: Path) -> None:
        self.site = site
        raise BackendUnavailable(
            f"site {site.name!r}: Slurm pools are not implemented yet; use --site local"
        )

    @property
    def client(self) -> Any:
        raise NotImplementedError

    def allocations(self) -> list[dict[str, Any]]:
        return []

    def close(self) -> None:
        pass
