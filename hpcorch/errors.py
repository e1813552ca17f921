"""The one exception tree of hpcorch.

Every error hpcorch raises derives from :class:`HpcorchError`. Foreign errors
(OSError from a subprocess, httpx errors, sqlite3 errors) are translated where
they enter, so callers only ever catch this tree::

    HpcorchError                  transient  exit code
    ├── SpecError                 no         2   bad input: a workflow, a site config, a CLI value
    │   ├── WorkflowError         no         2   cycle, unknown dependency, unknown key
    │   ├── SiteConfigError       no         2   a site file that does not validate
    │   ├── ResourceError         no         2   a request no partition of the site can satisfy
    │   ├── SiteRuleError         no         2   a job the site would refuse (account, limits)
    │   └── OptionError           no         2   a run option (flag, keyword, HPCORCH_* variable)
    ├── RunError                  no         1   a run that ended with failed tasks
    ├── JournalError              no         2   a run directory that is missing or unreadable
    │   └── RunLocked             no         2   another driver holds the run (one driver per run)
    └── InfrastructureError       yes        3   Slurm, Dask or the network is not available
        ├── SlurmError            yes        3   a Slurm command or REST call failed
        │   └── SubmissionRefused no         3   Slurm refused a job (limits, bad partition)
        └── BackendUnavailable    no         3   a backend cannot be used here (pyslurm mismatch)

``transient`` says whether trying again later may succeed; the retry policy
uses it so that infrastructure failures never use up a task's retries.
Messages say what to do, and never contain a secret (JWT, token).
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailable",
    "HpcorchError",
    "InfrastructureError",
    "JournalError",
    "OptionError",
    "ResourceError",
    "RunError",
    "RunLocked",
    "SiteConfigError",
    "SiteRuleError",
    "SlurmError",
    "SpecError",
    "SubmissionRefused",
    "WorkflowError",
]


class HpcorchError(Exception):
    """Root of every error hpcorch raises."""

    transient: bool = False
    exit_code: int = 1


class SpecError(HpcorchError):
    """Bad input: fix the file or the command line and run again."""

    exit_code = 2


class WorkflowError(SpecError):
    """A workflow that cannot run as written (cycle, unknown dependency, unknown key)."""


class SiteConfigError(SpecError):
    """A site configuration that does not validate."""


class ResourceError(SpecError):
    """A resource request that no partition of the site can satisfy."""


class SiteRuleError(SpecError):
    """A job the site would refuse (no account, over a walltime or node limit), found
    before anything is submitted; the message names the rule and the fix."""


class OptionError(SpecError):
    """A run option that does not validate; ``option`` names it (``budget``, ``regions``, ...)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


class RunError(HpcorchError):
    """A run that finished with tasks that failed."""

    exit_code = 1


class JournalError(HpcorchError):
    """A run directory or journal that cannot be read."""

    exit_code = 2


class RunLocked(JournalError):
    """Another driver holds the run directory's lock (``hpcorch.engine.driverlock``)."""


class InfrastructureError(HpcorchError):
    """Slurm, Dask or the network is not available right now."""

    transient = True
    exit_code = 3


class SlurmError(InfrastructureError):
    """A Slurm command or REST call failed."""


class SubmissionRefused(SlurmError):
    """Slurm refused the job outright; resubmitting the same request will not help."""

    transient = False


class BackendUnavailable(InfrastructureError):
    """A Slurm backend cannot be used on this machine (not installed, version mismatch)."""

    transient = False
