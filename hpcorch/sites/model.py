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

from hpcorch.containers import Container
from hpcorch.ids import check_constraint, check_slurm_name
from hpcorch.slurm.rest_versions import AUTO, DIALECTS, valid_api_version
from hpcorch.units import parse_duration, parse_memory

__all__ = [
    "GPU_REQUESTS",
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
    "SubmitSettings",
    "TokenSource",
    "WalltimeBin",
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

# --gpu-bind values: 'closest', 'none', 'single:1', 'map_gpu:0,1', 'verbose,closest'.
_GPU_BIND = re.compile(r"[A-Za-z0-9_.,:=-]+")

GPU_REQUESTS = ("gres", "gpus-per-node", "gpus-per-task", "gpus")
"""How a site wants GPUs asked for: ``--gres=gpu[:type]:N``, ``--gpus-per-node=N``,
``--gpus-per-task=N`` (with ``--ntasks-per-node``) or ``--gpus=N`` (per job)."""
GpuRequest = Literal["gres", "gpus-per-node", "gpus-per-task", "gpus"]


def _name(what: str) -> Any:
    return AfterValidator(lambda v: v if v is None else check_slurm_name(v, what))


SlurmName = Annotated[str, _name("name")]
Constraint = Annotated[str, AfterValidator(check_constraint)]


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
    gpu_vendor: Literal["nvidia", "amd"] | None = Field(
        None,
        description="whose GPUs: nvidia (CUDA_VISIBLE_DEVICES) or amd (ROCR_VISIBLE_DEVICES); "
        "default: from gpu_type (mi*: amd)",
    )
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


def _check_bind(value: str) -> str:
    if not _GPU_BIND.fullmatch(value) or value.startswith("-"):
        raise ValueError(
            f"gpu_bind {value!r:.60} is not an sbatch --gpu-bind value (e.g. 'closest', "
            "'none', 'map_gpu:0,1')"
        )
    return value


class WalltimeBin(_Frozen):
    """Jobs of up to ``max_nodes`` nodes may run up to ``max_walltime_s`` (e.g. Frontier's
    batch bins: 1-91 nodes 2 h, 92-183 nodes 6 h, 184+ nodes 12 h)."""

    max_nodes: int = Field(..., ge=1)
    max_walltime_s: Seconds = Field(..., gt=0)


class Partition(_Frozen):
    name: SlurmName
    nodes: int = Field(..., ge=1, description="number of nodes in the partition")
    node: NodeShape
    max_walltime_s: Seconds | None = None
    max_nodes_per_job: int | None = Field(None, ge=1)
    default: bool = False
    node_names: str | None = Field(None, description="Slurm hostlist, e.g. 'gpu[1-2]'")
    gres: str | None = Field(
        None, description="GRES name[:type] of this partition's GPUs, e.g. 'gpu:sim', 'gpu:a100'"
    )
    constraint: Constraint | None = Field(None, description="sbatch --constraint for these nodes")
    charge: Charge | None = Field(None, description="overrides the site's charge rates")
    gpu_request: GpuRequest | None = Field(
        None,
        description=(
            "how jobs ask for this partition's GPUs: gres (--gres=GRES:N), gpus-per-node, "
            "gpus-per-task or gpus; default: gres when gres is given"
        ),
    )
    gpu_bind: Annotated[str, AfterValidator(_check_bind)] | None = Field(
        None, description="sbatch --gpu-bind for jobs here, e.g. 'closest', 'none'"
    )
    qos: SlurmName | None = Field(None, description="QOS of jobs here (default: the site's)")
    reservation: SlurmName | None = Field(None, description="sbatch --reservation for jobs here")
    select_by_name: bool = Field(
        True,
        description=(
            "jobs name this partition (--partition); false where the site selects these "
            "nodes by constraint alone (Perlmutter: -C gpu / -C cpu)"
        ),
    )
    walltime_bins: tuple[WalltimeBin, ...] = Field(
        (),
        description=(
            "walltime limits by job size, e.g. [{max_nodes: 91, max_walltime_s: 2h}, ...]; "
            "a job larger than every bin is refused"
        ),
    )

    @property
    def gpu_method(self) -> str | None:
        """How jobs ask for GPUs here (None: they cannot, or there are none)."""
        if not self.node.gpus:
            return None
        if self.gpu_request is not None:
            return self.gpu_request
        return "gres" if self.gres else None

    @model_validator(mode="after")
    def _check_bins(self) -> Partition:
        sizes = [b.max_nodes for b in self.walltime_bins]
        if sizes != sorted(set(sizes)):
            raise ValueError(f"walltime_bins must go up in max_nodes without repeats, got {sizes}")
        return self

    def bin_for(self, nodes: int) -> WalltimeBin | None:
        """The smallest walltime bin a job of ``nodes`` nodes falls in (None: no bins, or
        too many nodes for every bin)."""
        return next((b for b in self.walltime_bins if nodes <= b.max_nodes), None)

    container: Container | None = Field(
        None, description="the image this partition's workers start in (overrides the site's)"
    )
    modules: tuple[str, ...] = Field(
        (), description="`module load`ed in this partition's worker jobs, after the site's"
    )


class Qos(_Frozen):
    name: SlurmName
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
    module_purge: bool = Field(False, description="`module purge` before loading modules")
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
    launcher: tuple[str, ...] = Field(
        ("srun",),
        description="argv prefix: srun --mpi=pmix (a Slurm step), or mpirun (Open MPI 5+'s "
        "own launcher inside the allocation, for a Slurm without the PMIx plugin)",
    )
    fallback: tuple[str, ...] = Field(
        (),
        description="launcher used instead where `srun --mpi=list` lacks the plugin "
        "launcher asks for, e.g. [mpirun] (Debian's Slurm 26.05 has no mpi_pmix)",
    )
    bind: Literal["cores", "none"] = Field(
        "cores",
        description="bind each rank to its own cores, or leave ranks unbound "
        "(nodes whose cores are not real, as on an emulated cluster)",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="environment of every MPI step, e.g. OMPI_MCA_btl: self,tcp",
    )


class SubmitSettings(_Frozen):
    """Where ``hpcorch submit`` runs the driver job: a small, long-lived job (one core,
    little memory) on a shared partition or QOS, with a walltime under its limit."""

    partition: str | None = Field(None, description="partition (default: the site's)")
    qos: SlurmName | None = Field(None, description="QOS of the driver, e.g. 'shared'")
    constraint: Constraint | None = Field(None, description="e.g. 'cpu' on Perlmutter")
    walltime_s: Seconds | None = Field(
        None, gt=0, description="default driver walltime (default: 24h, or the limit if lower)"
    )
    cpus: int = Field(1, ge=1)
    memory: Bytes = Field(1024**3, gt=0, description="memory of the driver job")


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
    account: SlurmName | None = Field(None, description="sbatch --account of every job")
    account_required: bool = Field(
        False, description="the site refuses jobs without an account: check before submitting"
    )
    qos: tuple[Qos, ...] = Field(
        (),
        description=(
            "the site's QOSes and their limits; a plain name ('qos: regular', e.g. in a user "
            "override) sets default_qos"
        ),
    )
    default_qos: SlurmName | None = Field(
        None, description="QOS of every job (default: the QOS marked default: true, if any)"
    )
    reservation: SlurmName | None = Field(None, description="sbatch --reservation of every job")
    submit: SubmitSettings = SubmitSettings()
    limits: Limits = Limits()
    charge: Charge = Charge()
    prologue: Prologue = Prologue()
    dask: DaskSettings = DaskSettings()
    mpi: MpiSettings = MpiSettings()
    allocation: AllocationUse = AllocationUse()
    container: Container | None = Field(
        None, description="the image every pool's Dask workers start in (hpcorch.containers)"
    )

    @model_validator(mode="before")
    @classmethod
    def _qos_name(cls, data: Any) -> Any:
        """``qos: regular`` (a name) is the default QOS, as a user override writes it."""
        if isinstance(data, dict) and isinstance(data.get("qos"), str):
            data = {**data, "default_qos": data["qos"], "qos": ()}
        return data

    @model_validator(mode="after")
    def _check(self) -> Site:
        names = [p.name for p in self.partitions]
        if len(set(names)) != len(names):
            raise ValueError(f"partition names must be unique, got {names}")
        if sum(p.default for p in self.partitions) > 1:
            raise ValueError("at most one partition may be default: true")
        if self.kind == "slurm" and self.slurm is None:
            raise ValueError("kind: slurm needs a slurm: section (backends, rest, conf)")
        qos_names = [q.name for q in self.qos]
        if len(set(qos_names)) != len(qos_names):
            raise ValueError(f"qos names must be unique, got {qos_names}")
        if sum(q.default for q in self.qos) > 1:
            raise ValueError("at most one qos may be default: true")
        if self.kind == "slurm":
            for p in self.partitions:
                if p.node.gpus and p.gpu_method is None:
                    raise ValueError(
                        f"partition {p.name!r} has {p.node.gpus} GPUs per node but no way to "
                        "ask for them: set gpu_request (gres, gpus-per-node, gpus-per-task, "
                        "gpus) or gres (e.g. 'gpu:a100')"
                    )
                if not p.select_by_name and not p.constraint:
                    raise ValueError(
                        f"partition {p.name!r} has select_by_name: false but no constraint: "
                        "jobs could not ask for its nodes"
                    )
            if self.submit.partition is not None and self.submit.partition not in names:
                raise ValueError(
                    f"submit.partition {self.submit.partition!r} is not a partition of this "
                    f"site; it has {names}"
                )
        return self

    def qos_named(self, name: str | None) -> Qos | None:
        """The QOS called ``name`` as the site lists it (None: not listed, or no name)."""
        return next((q for q in self.qos if q.name == name), None) if name else None

    @property
    def qos_default(self) -> str | None:
        """The QOS jobs get when nothing more specific names one."""
        if self.default_qos:
            return self.default_qos
        return next((q.name for q in self.qos if q.default), None)

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

    def container_for(self, partition: Partition) -> Container | None:
        """The image the workers of ``partition``'s pools start in, if any."""
        return partition.container or self.container
