"""Site configurations: what hpcorch knows about each cluster.

Sites are data (``site-configs/*.yaml``) validated by the frozen models in
:mod:`hpcorch.sites.model`; :func:`load_site` finds one by name or path.
"""

from hpcorch.sites.jobqueue import site_from_jobqueue
from hpcorch.sites.loader import expand_vars, list_sites, load_site, parse_site, site_dirs
from hpcorch.sites.model import (
    Charge,
    DaskSettings,
    Limits,
    MpiSettings,
    NodeShape,
    Partition,
    Prologue,
    Qos,
    RestAccess,
    Site,
    SlurmAccess,
    TokenSource,
)
from hpcorch.sites.schema import schema_text, site_schema

__all__ = [
    "Charge",
    "DaskSettings",
    "Limits",
    "MpiSettings",
    "NodeShape",
    "Partition",
    "Prologue",
    "Qos",
    "RestAccess",
    "Site",
    "SlurmAccess",
    "TokenSource",
    "expand_vars",
    "list_sites",
    "load_site",
    "parse_site",
    "schema_text",
    "site_dirs",
    "site_from_jobqueue",
    "site_schema",
]
