"""Frozen, validated models of a site (one cluster): partitions, node shapes, access, costs.

``NodeShape``, ``Partition`` and ``Site`` are the core the engine and placement
code rely on; their field names are part of the internal contract: extend,
don't rename. Quantities may be written the way people write them in YAML
(``memory: 8000M``, ``max_walltime_s: 12:00:00``); they are stored as numbers
(bytes, seconds).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from hpcorch.slurm.rest_versions import AUTO, DIALECTS, valid_api_version
from hpcorch.units import parse_duration, parse_memory

__all__ = [
    "AllocationUse",
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
]


def _memory(value: Any) -> Any:
    return parse_memory(value) if isinstance(value, str) else value


def _duration(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


Bytes = Annotated[
    int,
    BeforeValidator(_memory),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*[a-zA-Z]*\s*$"},
            ],
            "description": "bytes, or a size like '8000M', '256GB', '512GiB'",
        }
    ),
]
Seconds = Annotated[
    float,
    BeforeValidator(_duration),
    WithJsonSchema(
        {
            "anyOf": [{"type": "number", "minimum": 0}, {"type": "string"}],
            "description": "seconds, or a duration like '30m', '12:00:00', '1-00:00:00'",
        }
    ),
]


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Fields whose text may span lines (shell commands, prose, values rendered quoted).
    # Every other string of a site ends up on one line of a job script, an #SBATCH
    # directive or a command line, where a newline would start a command of its own.
    _multiline: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _single_lines(self) -> Any:
        for name, value in self:
            if name in self._multiline:
                continue
            texts: list[Any] = []
            if isinstance(value, str):
                texts = [value]
            elif isinstance(value, tuple):
                texts = list(value)
            elif isinstance(value, dict):
                texts = [*value, *value.values()]
            for text in texts:
                if isinstance(text, str) and any(c in text for c in "\n\r\0"):
                    raise ValueError(f"{name}: {text!r:.60} must be a single line")
        return self


class NodeShape(_Frozen):
    """One node's hardware as Slurm sees it."""

    sockets: int = Field(1, ge=1)
    cores_per_socket: int = Field(1, ge=1)
    threads_per_core: int = Field(1, ge=1)
    memory: Bytes = Field(..., gt=0, description="bytes of memory Slurm can allocate")
    gpus: int = Field(0, ge=0)
    gpu_type: str | None = None
    gpu_sockets: tuple[int, ...] = Field(
        (), description="socket of each GPU, by GPU index (empty: unknown)"
    )
    nvlinks: tuple[tuple[int, int], ...] = Field((), description="GPU index pairs joined by NVLink")

    @property
    def cores(self) -> int:
        return self.sockets * self.cores_per_socket

    @model_validator(mode="after")
    def _check_gpus(self) -> NodeShape:
        if self.gpu_sockets and len(self.gpu_sockets) != self.gpus:
            raise ValueError(
                f"gpu_sockets lists {len(self.gpu_sockets)} GPUs but gpus is {self.gpus}: "
                "give one socket per GPU, or leave gpu_sockets empty"
            )
        if any(not 0 <= s < self.sockets for s in self.gpu_sockets):
            raise ValueError(f"gpu_sockets must be socket indices 0..{self.sockets - 1}")
        for a, b in self.nvlinks:
            if not (0 <= a < self.gpus and 0 <= b < self.gpus) or a == b:
                raise ValueError(
                    f"nvlinks pair ({a}, {b}) must join two different GPUs 0..{self.gpus - 1}"
                )
        return self


class Charge(_Frozen):
    """What an hour costs: service units (SU) per node-hour and/or per GPU-hour."""

    su_per_node_hour: float | None = Field(None, ge=0)
    su_per_gpu_hour: float | None = Field(None, ge=0)
    price_per_su: float | None = Field(None, ge=0, description="currency units per SU, if known")
    currency: str | None = Field(None, description="ISO 4217 code of price_per_su, e.g. USD")


class Partition(_Frozen):
    name: str
    nodes: int = Field(..., ge=1, description="number of nodes in the partition")
    node: NodeShape
    max_walltime_s: Seconds | None = None
    max_nodes_per_job: int | None = Field(None, ge=1)
    default: bool = False
    node_names: str | None = Field(None, description="Slurm hostlist, e.g. 'gpu[1-2]'")
    gres: str | None = Field(None, description="GRES a job asks for here, e.g. 'gpu:sim'")
    constraint: str | None = Field(None, description="sbatch --constraint for these nodes")
    charge: Charge | None = Field(None, description="overrides the site's charge rates")


class Qos(_Frozen):
    name: str
    max_walltime_s: Seconds | None = None
    max_nodes_per_job: int | None = Field(None, ge=1)
    max_submit_jobs: int | None = Field(None, ge=1, description="MaxSubmitJobs per user")
    max_running_jobs: int | None = Field(None, ge=1, description="MaxJobs per user")
    charge_factor: float = Field(1.0, ge=0, description="multiplies the partition's SU rate")
    default: bool = False


class Limits(_Frozen):
    """Cluster-wide limits, as slurm.conf and the accounting database set them."""

    max_walltime_s: Seconds | None = None
    max_nodes_per_job: int | None = Field(None, ge=1)
    max_submit_jobs: int | None = Field(None, ge=1, description="MaxSubmitJobs per user")
    max_array_size: int | None = Field(None, ge=1, description="slurm.conf MaxArraySize")


class TokenSource(_Frozen):
    """Where the slurmrestd JWT comes from: an environment variable, else a command."""

    env: str = "SLURM_JWT"
    command: tuple[str, ...] = ("scontrol", "token")
    lifespan_s: Seconds = Field(
        1800, gt=0, description="lifespan asked of the command; renewed before it ends"
    )


class RestAccess(_Frozen):
    url: str = Field(..., description="slurmrestd base URL, may use ${VAR} and ${VAR:-default}")
    api_version: Annotated[str, AfterValidator(valid_api_version)] = Field(
        AUTO,
        description=(
            "slurmrestd data_parser version, e.g. 'v0.0.42'; 'auto': the newest the server "
            "and hpcorch share"
        ),
        json_schema_extra={"enum": [AUTO, *DIALECTS]},
    )
    user: str | None = Field(None, description="X-SLURM-USER-NAME; default: the login name")
    token: TokenSource = TokenSource()
    timeout_s: Seconds = Field(10, gt=0)


class SlurmAccess(_Frozen):
    """How hpcorch reaches this site's Slurm: backends tried in order."""

    backends: tuple[Literal["rest", "cli", "pyslurm"], ...] = ("cli",)
    rest: RestAccess | None = None
    conf: str | None = Field(
        None,
        description=(
            "slurm.conf path exported as SLURM_CONF to CLI calls; may use ${VAR} and "
            "${VAR:-default}; relative paths are taken from the current directory"
        ),
    )
    cluster: str | None = Field(None, description="ClusterName in slurm.conf")
    version: str | None = Field(None, description="Slurm version, e.g. '22.05'; pyslurm must match")

    @model_validator(mode="after")
    def _rest_needs_url(self) -> SlurmAccess:
        if "rest" in self.backends and self.rest is None:
            raise ValueError("backends lists 'rest' but no rest: {url: ...} is given")
        return self


class Prologue(_Frozen):
    """What every job script does before hpcorch starts: modules, environment, commands."""

    modules: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    commands: tuple[str, ...] = ()
    directives: tuple[str, ...] = Field(
        (), description="extra sbatch options, e.g. '--constraint=gpu' (no '#SBATCH' prefix)"
    )

    # env values are rendered quoted (hpcorch.slurm.script.prologue_lines)
    _multiline: ClassVar[frozenset[str]] = frozenset({"commands", "env"})

    @model_validator(mode="after")
    def _env_names(self) -> Prologue:
        for key, value in self.env.items():
            if not _ENV_NAME.fullmatch(key):
                raise ValueError(f"env: {key!r:.60} is not an environment variable name")
            if "\0" in value:
                raise ValueError(f"env: the value of {key} contains a NUL character")
        return self


class DaskSettings(_Frozen):
    interface: str | None = Field(None, description="network interface for Dask, e.g. 'hsn0'")
    local_directory: str | None = None
    log_directory: str | None = None
    worker_extra_args: tuple[str, ...] = ()


class MpiSettings(_Frozen):
    launcher: tuple[str, ...] = Field(("srun",), description="argv prefix, e.g. srun --mpi=pmix")
    env: dict[str, str] = Field(
        default_factory=dict,
        description="environment of every MPI step, e.g. OMPI_MCA_btl: self,tcp",
    )


class AllocationUse(_Frozen):
    """What ``hpcorch run`` does inside an existing allocation (``SLURM_JOB_ID`` set)."""

    use_current: bool = Field(True, description="run tasks on the allocation's own nodes")
    add_allocations: bool = Field(
        False, description="also submit allocations of this site when the tasks need more"
    )


class Site(_Frozen):
    _multiline: ClassVar[frozenset[str]] = frozenset({"description"})

    name: str
    kind: Literal["local", "slurm"]
    partitions: tuple[Partition, ...] = Field(..., min_length=1)
    description: str | None = None
    docs: tuple[str, ...] = Field((), description="public pages the figures come from")
    slurm: SlurmAccess | None = None
    account: str | None = None
    qos: tuple[Qos, ...] = ()
    limits: Limits = Limits()
    charge: Charge = Charge()
    prologue: Prologue = Prologue()
    dask: DaskSettings = DaskSettings()
    mpi: MpiSettings = MpiSettings()
    allocation: AllocationUse = AllocationUse()

    @model_validator(mode="after")
    def _check(self) -> Site:
        names = [p.name for p in self.partitions]
        if len(set(names)) != len(names):
            raise ValueError(f"partition names must be unique, got {names}")
        if sum(p.default for p in self.partitions) > 1:
            raise ValueError("at most one partition may be default: true")
        if self.kind == "slurm" and self.slurm is None:
            raise ValueError("kind: slurm needs a slurm: section (backends, rest, conf)")
        return self

    def partition(self, name: str | None = None) -> Partition:
        """The named partition, or the default one (the first if none is marked)."""
        if name is None:
            return next((p for p in self.partitions if p.default), self.partitions[0])
        for p in self.partitions:
            if p.name == name:
                return p
        raise KeyError(f"site {self.name!r} has no partition {name!r}; it has {self.names()}")

    def names(self) -> list[str]:
        return [p.name for p in self.partitions]
