"""hpcorch: run scientific workflows on Slurm clusters.

Importing hpcorch does no work: no Dask cluster, no Slurm call, no file I/O.
"""

from hpcorch._version import __version__
from hpcorch.errors import HpcorchError

__all__ = ["HpcorchError", "__version__"]
