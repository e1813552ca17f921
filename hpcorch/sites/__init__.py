"""Site configurations: what hpcorch knows about each cluster."""

from hpcorch.sites.model import NodeShape, Partition, Site

__all__ = ["NodeShape", "Partition", "Site"]
