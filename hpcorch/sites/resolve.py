"""Which site a run uses.

:func:`resolve_site` is the one place a site name becomes a
:class:`~hpcorch.sites.Site`; ``local`` is built from this machine. Whether a
task fits the site is :mod:`hpcorch.placement.fit`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

from hpcorch.errors import OptionError, SiteConfigError, SpecError
from hpcorch.gpu_env import visible_gpus
from hpcorch.sites.loader import load_site
from hpcorch.sites.model import NodeShape, Partition, Site

__all__ = ["local_site", "resolve_regions", "resolve_site"]


def _gpu_count() -> int:
    visible = visible_gpus(os.environ)
    if visible is not None:
        return len(visible)
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def local_site() -> Site:
    """This machine as a one-node site: its usable cores, memory and GPUs."""
    cores = len(os.sched_getaffinity(0))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    node = NodeShape(sockets=1, cores_per_socket=cores, memory=memory, gpus=_gpu_count())
    return Site(
        name="local",
        kind="local",
        partitions=(Partition(name="local", nodes=1, node=node, default=True),),
    )


def resolve_site(name: str) -> Site:
    """The site called ``name`` (or a site file path); ``local`` takes this machine's shape."""
    try:
        site = load_site(name)
    except SiteConfigError:
        if name != "local":
            raise
        return local_site()
    if site.kind == "local":
        # A local site file gives a floor; the workers get what this machine has.
        return site.model_copy(update={"partitions": local_site().partitions})
    return site


def resolve_regions(names: Sequence[str]) -> list[Site]:
    """The sites of a run's ``regions``; an :class:`OptionError` for one that is unknown or
    not a Slurm site."""
    sites = []
    for name in names:
        try:
            site = resolve_site(name)
        except SpecError as exc:
            raise OptionError("regions", f"{name}: {exc}") from None
        if site.kind != "slurm":
            raise OptionError("regions", f"{name} is a {site.kind} site; regions are Slurm sites")
        sites.append(site)
    return sites
