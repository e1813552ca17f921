"""Frozen, validated specs of a workflow: resources, MPI layout, tasks.

Everything that enters hpcorch (YAML, WfFormat, the Python API) becomes a
:class:`WorkflowSpec` here, and nothing downstream re-checks it. An unknown
key is an error that names the key and lists the valid ones; quantities
accept the forms :mod:`hpcorch.units` parses (``4GiB``, ``10m``).
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hpcorch import dag
from hpcorch.containers import Container
from hpcorch.errors import WorkflowError
from hpcorch.ids import check_constraint, check_id, check_slurm_name
from hpcorch.units import parse_duration, parse_memory

__all__ = [
    "DistributedSpec",
    "MpiSpec",
    "ResourceSpec",
    "TaskKind",
    "TaskRef",
    "TaskSpec",
    "WorkflowSpec",
    "check_values",
    "parse_task",
    "parse_workflow",
    "resource_twin",
]

TaskKind = Literal["function", "command", "emulated"]
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MODULE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+/@-]*")
# Bounds that keep every value storable (SQLite's 64-bit integers) and every run finite.
MAX_RETRIES = 1000
MAX_PRIORITY = 10**9
# A function task's args/kwargs travel to the worker and into the memo hash: a YAML
# alias bomb (a few lines that expand to billions of values) must not get that far.
MAX_ARGUMENT_VALUES = 1_000_000
MAX_ARGUMENT_DEPTH = 100
# concrete types: an isinstance check against an ABC costs ten times more per value
_CONTAINERS = (dict, list, tuple, set, frozenset)


def _count_values(value: Any) -> None:
    """Walk ``value`` as it would be serialized (shared parts count each time they appear);
    ValueError past :data:`MAX_ARGUMENT_VALUES` values or :data:`MAX_ARGUMENT_DEPTH` levels."""
    count = 1
    stack: list[tuple[Any, int]] = [(value, 0)] if isinstance(value, _CONTAINERS) else []
    while stack:
        item, depth = stack.pop()
        if depth > MAX_ARGUMENT_DEPTH:
            raise ValueError(f"nested more than {MAX_ARGUMENT_DEPTH} levels deep")
        # count a container's items at once, walk only those that are containers
        items = [v for kv in item.items() for v in kv] if isinstance(item, dict) else item
        count += len(items)
        if count > MAX_ARGUMENT_VALUES:
            raise ValueError(
                f"more than {MAX_ARGUMENT_VALUES:,} values (YAML aliases count each time they "
                "are used); pass large data through a file and read it in the task"
            )
        stack.extend((v, depth + 1) for v in items if isinstance(v, _CONTAINERS))


def check_values(value: Any) -> None:
    """ValueError where ``value`` is too large or deep to be a task's arguments."""
    _count_values(value)


def _no_nul(values: Any, what: str) -> None:
    for v in values:
        if isinstance(v, str) and "\0" in v:
            raise ValueError(f"{what} {v!r:.60} contains a NUL character")


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        # pydantic's own "extra forbidden" names the key but not the valid ones.
        if isinstance(data, Mapping):
            valid = cls.model_fields.keys()
            for key in data:
                if key not in valid:
                    raise ValueError(f"unknown key {key!r} (valid keys: {', '.join(valid)})")
        return data


class ResourceSpec(_Spec):
    """What one task needs: ``memory`` in bytes, ``walltime`` in seconds (an estimate)."""

    cpus: int = Field(1, ge=1)
    memory: int = Field(0, ge=0, description="bytes; 0 means no explicit request")
    gpus: float = Field(0, ge=0, allow_inf_nan=False)
    nodes: int = Field(1, ge=1)
    walltime: float | None = Field(None, gt=0, allow_inf_nan=False, description="seconds")
    gpu_sharing: bool = Field(False, description="allow a fractional gpus request")

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> Any:
        return parse_memory(value) if isinstance(value, str | int | float) else value

    @field_validator("walltime", mode="before")
    @classmethod
    def _walltime(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str | int | float) else value

    @model_validator(mode="after")
    def _whole_gpus(self) -> ResourceSpec:
        if self.gpus != int(self.gpus) and not self.gpu_sharing:
            raise ValueError(
                f"gpus: {self.gpus} is fractional; set gpu_sharing: true to share a GPU"
            )
        return self


class MpiSpec(_Spec):
    """An MPI step: ``ranks`` processes, optionally ``ranks_per_node`` of them per node."""

    ranks: int = Field(..., ge=1)
    ranks_per_node: int | None = Field(None, ge=1)
    cpus_per_rank: int = Field(1, ge=1)
    gpus_per_rank: float = Field(0, ge=0, allow_inf_nan=False)

    @property
    def nodes(self) -> int:
        if self.ranks_per_node is None:
            return 1
        return -(-self.ranks // self.ranks_per_node)


class DistributedSpec(_Spec):
    """A torch.distributed training: ``nodes`` x ``ranks_per_node`` ranks as one srun step.

    ``ranks_per_node`` left out: one rank per GPU of the node where ranks take GPUs
    (resolved against the site when the run starts, :func:`hpcorch.training.resolve_ranks`),
    else one. ``backend`` left out: ``nccl`` where ranks take GPUs, else ``gloo``.
    ``checkpoint_dir``: where the training saves checkpoints
    (:func:`hpcorch.torchdist.save_checkpoint`), relative to the run directory
    unless absolute; a new attempt gets the newest complete
    one in ``HPCORCH_CHECKPOINT``. ``port``: a fixed rendezvous port (else hpcorch picks a
    free one per attempt).
    """

    nodes: int = Field(1, ge=1)
    ranks_per_node: int | None = Field(None, ge=1)
    cpus_per_rank: int = Field(1, ge=1)
    gpus_per_rank: int = Field(0, ge=0)
    backend: Literal["nccl", "gloo"] | None = None
    checkpoint_dir: str | None = None
    port: int | None = Field(None, ge=1024, le=65535)

    @field_validator("checkpoint_dir")
    @classmethod
    def _checkpoint_dir(cls, value: str | None) -> str | None:
        if value is not None:
            if not value:
                raise ValueError("must not be empty (leave it out to keep no checkpoints)")
            _no_nul([value], "checkpoint_dir")
        return value

    @model_validator(mode="after")
    def _backend(self) -> DistributedSpec:
        if self.backend is None:
            object.__setattr__(self, "backend", "nccl" if self.gpus_per_rank else "gloo")
        if self.backend == "nccl" and not self.gpus_per_rank:
            raise ValueError("backend nccl needs GPUs: set gpus_per_rank (or use gloo)")
        return self

    @property
    def torch_backend(self) -> str:
        assert self.backend is not None  # set by _backend
        return self.backend

    def as_mpi(self, ranks_per_node: int | None = None) -> MpiSpec:
        """The srun step's layout (the one MPI tasks use)."""
        per_node = ranks_per_node or self.ranks_per_node or 1
        return MpiSpec(
            ranks=self.nodes * per_node,
            ranks_per_node=per_node,
            cpus_per_rank=self.cpus_per_rank,
            gpus_per_rank=self.gpus_per_rank,
        )


class TaskRef(BaseModel):
    """Stands for another task's result inside a function task's arguments."""

    model_config = ConfigDict(frozen=True)

    id: str


_DEFAULT_RESOURCES = ResourceSpec()


class TaskSpec(_Spec):  # noqa: PLW1641  # pydantic adds __hash__ (frozen)
    """One task. ``kind`` follows from which of command/function/duration is given."""

    id: str
    kind: TaskKind | None = None
    command: tuple[str, ...] | None = None
    function: str | Callable[..., Any] | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = Field(default_factory=dict)
    duration: float | None = Field(
        None, ge=0, allow_inf_nan=False, description="seconds an emulated task holds"
    )
    touch_memory: bool = Field(False, description="emulated: allocate resources.memory")
    after: tuple[str, ...] = ()
    retries: int = Field(0, ge=0, le=MAX_RETRIES)
    priority: int = Field(0, ge=-MAX_PRIORITY, le=MAX_PRIORITY)
    tags: tuple[str, ...] = ()
    memoize: bool = False
    inputs: tuple[str, ...] = Field((), description="files whose content keys the memo hash")
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    resources: ResourceSpec = _DEFAULT_RESOURCES
    mpi: MpiSpec | None = None
    # Slurm knobs of the jobs this task runs in; tasks with different values run in
    # different pools (hpcorch.provision.slurm_pool). None: the site's.
    qos: str | None = Field(None, description="Slurm QOS, e.g. 'regular'")
    constraint: str | None = Field(
        None, description="node features besides the partition's, e.g. 'gpu&hbm80g'"
    )
    reservation: str | None = Field(None, description="Slurm reservation")
    account: str | None = Field(None, description="Slurm account charged")
    exclusive: bool = Field(False, description="whole nodes, shared with no other job")
    bundle: bool | None = Field(
        None,
        description="run in a bundle with other small tasks (hpcorch.policies.bundling); "
        "None: as the workflow says",
    )

    @field_validator("qos", "reservation", "account")
    @classmethod
    def _slurm_name(cls, value: str | None, info: Any) -> str | None:
        return None if value is None else check_slurm_name(value, str(info.field_name))

    @field_validator("constraint")
    @classmethod
    def _constraint(cls, value: str | None) -> str | None:
        return None if value is None else check_constraint(value)

    container: Container | None = Field(
        None, description="command tasks: the image the command runs in (hpcorch.containers)"
    )
    modules: tuple[str, ...] = Field((), description="command tasks: `module load` these first")
    module_purge: bool = Field(False, description="command tasks: `module purge` before loading")
    setup: str | None = Field(
        None, description="command tasks: shell lines run before the command (beforeScript)"
    )
    distributed: DistributedSpec | None = None
    """A torch.distributed training; its ranks run as the MPI step :attr:`mpi` describes."""

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return check_id(value, "task id")

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not _ENV_NAME.fullmatch(key):
                raise ValueError(
                    f"environment variable name {key!r:.60} must be letters, digits and _ "
                    "(not starting with a digit)"
                )
        _no_nul(value.values(), "environment value")
        return value

    @field_validator("cwd")
    @classmethod
    def _cwd(cls, value: str | None) -> str | None:
        if value is not None:
            if not value:
                raise ValueError("must not be empty (leave it out to run in the current directory)")
            _no_nul([value], "cwd")
        return value

    @field_validator("modules")
    @classmethod
    def _modules(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _MODULE_NAME.fullmatch(name):
                raise ValueError(
                    f"module {name!r:.60} is not a module name (letters, digits and . _ / + - @)"
                )
        return value

    @field_validator("setup")
    @classmethod
    def _setup(cls, value: str | None) -> str | None:
        if value is not None:
            _no_nul([value], "setup")
        return value

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        _no_nul(value, "input")
        return value

    @field_validator("args", "kwargs")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        _count_values(value)
        return value

    @field_validator("command", mode="before")
    @classmethod
    def _argv(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(
                f"must be an argv list such as [python, prep.py], not the string {value!r}"
            )
        if isinstance(value, list | tuple):
            for v in value:
                if isinstance(v, bool):
                    raise ValueError(
                        f"argument {v!r} is a YAML boolean; quote it, e.g. '{str(v).lower()}'"
                    )
            argv = tuple(str(v) if isinstance(v, int | float) else v for v in value)
            _no_nul(argv, "argument")
            return argv
        return value

    @field_validator("function", mode="before")
    @classmethod
    def _function(cls, value: Any) -> Any:
        if isinstance(value, str) and not re.fullmatch(r"[\w.]+:[\w.]+", value):
            raise ValueError(f"must look like 'package.module:name', got {value!r}")
        return value

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _kind(self) -> TaskSpec:
        given = [
            k
            for k, v in (
                ("command", self.command),
                ("function", self.function),
                ("emulated", self.duration),
            )
            if v is not None
        ]
        names = {"command": "command", "function": "function", "emulated": "duration"}
        if len(given) != 1:
            raise ValueError(
                "give exactly one of command (argv list), function ('module:name') or "
                f"duration (emulated); got {', '.join(names[g] for g in given) or 'none'}"
            )
        if self.kind is not None and self.kind != given[0]:
            raise ValueError(f"kind {self.kind!r} needs {names[self.kind]}")
        if self.command is not None and not self.command:
            raise ValueError("command must not be empty")
        if given[0] != "function" and (self.args or self.kwargs):
            raise ValueError("args/kwargs only apply to function tasks")
        if given[0] != "command":
            used = [
                k
                for k, v in (
                    ("container", self.container),
                    ("modules", self.modules),
                    ("module_purge", self.module_purge),
                    ("setup", self.setup),
                )
                if v
            ]
            if used:
                raise ValueError(
                    f"{', '.join(used)}: for command tasks only; a function task runs in its "
                    "pool's workers (set their container and modules in the site config)"
                )
        if self.kind is None:
            object.__setattr__(self, "kind", given[0])
        if self.distributed is not None:
            if given[0] == "emulated":
                raise ValueError("distributed applies to command and function tasks")
            if self.mpi is None:
                object.__setattr__(self, "mpi", self.distributed.as_mpi())
            elif self.mpi != self.distributed.as_mpi(self.mpi.ranks_per_node):
                raise ValueError("give distributed or mpi, not both")
        return self

    def variant(self, **update: Any) -> TaskSpec:
        """A copy with ``update`` (an id and arguments) set as given, not validated again:
        for sweeps, whose values the caller checked (pydantic's ``model_copy`` costs
        several times more, which a million tasks notice).

        The copy holds only ``update``; its other fields are read from this task (see
        :class:`_VariantOf`): a full field dict is 0.8 KB, most of a sweep task's memory.
        """
        base, own = self, update
        if isinstance(self.__pydantic_fields_set__, _VariantOf):  # a variant of a variant
            base, own = self.__pydantic_fields_set__.template, {**self.__dict__, **update}
        clone = TaskSpec.__new__(TaskSpec)
        object.__setattr__(clone, "__dict__", own)
        object.__setattr__(clone, "__pydantic_fields_set__", _VariantOf.of(base))
        object.__setattr__(clone, "__pydantic_extra__", None)
        object.__setattr__(clone, "__pydantic_private__", None)
        return clone

    if not TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any:
            # only for what the instance lacks: a variant's fields it shares with its template
            fields = object.__getattribute__(self, "__pydantic_fields_set__")
            if isinstance(fields, _VariantOf) and name in _TASK_FIELDS:
                return getattr(fields.template, name)
            return super().__getattr__(name)

    def _full(self) -> TaskSpec:
        """This task with all its fields in its own dict (a variant's filled in)."""
        fields = self.__pydantic_fields_set__
        if not isinstance(fields, _VariantOf):
            return self
        clone = TaskSpec.__new__(TaskSpec)
        object.__setattr__(clone, "__dict__", {**fields.template.__dict__, **self.__dict__})
        object.__setattr__(clone, "__pydantic_fields_set__", set(fields.template_set))
        object.__setattr__(clone, "__pydantic_extra__", None)
        object.__setattr__(clone, "__pydantic_private__", None)
        return clone

    # What reads the field dict directly sees a variant's full one.
    def __eq__(self, other: object) -> bool:
        if isinstance(other, TaskSpec) and (
            isinstance(self.__pydantic_fields_set__, _VariantOf)
            or isinstance(other.__pydantic_fields_set__, _VariantOf)
        ):
            return BaseModel.__eq__(self._full(), other._full())
        return BaseModel.__eq__(self, other)

    def __repr_args__(self) -> Any:
        full = self._full()
        return BaseModel.__repr_args__(full) if full is not self else super().__repr_args__()

    def __getstate__(self) -> dict[Any, Any]:
        full = self._full()
        return BaseModel.__getstate__(full) if full is not self else super().__getstate__()

    def __copy__(self) -> TaskSpec:
        return BaseModel.__copy__(self._full())

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        full = self._full()
        return (
            BaseModel.model_dump(full, **kwargs)
            if full is not self
            else super().model_dump(**kwargs)
        )

    def model_dump_json(self, **kwargs: Any) -> str:
        full = self._full()
        if full is not self:
            return BaseModel.model_dump_json(full, **kwargs)
        return super().model_dump_json(**kwargs)

    @property
    def slurm_knobs(self) -> dict[str, Any]:
        """The Slurm knobs this task sets (those left to the site are not listed)."""
        return {
            k: getattr(self, k)
            for k in ("qos", "constraint", "reservation", "account", "exclusive")
            if getattr(self, k)
        }

    @property
    def task_kind(self) -> TaskKind:
        assert self.kind is not None  # set by _kind
        return self.kind

    @property
    def cpus(self) -> int:
        """Cores the task holds on one worker (MPI ranks on one node count together)."""
        if self.mpi is None:
            return self.resources.cpus
        per_node = self.mpi.ranks_per_node or self.mpi.ranks
        return max(self.resources.cpus, per_node * self.mpi.cpus_per_rank)

    @property
    def gpus(self) -> float:
        if self.mpi is None:
            return self.resources.gpus
        per_node = self.mpi.ranks_per_node or self.mpi.ranks
        return max(self.resources.gpus, per_node * self.mpi.gpus_per_rank)

    @property
    def nodes(self) -> int:
        return max(self.resources.nodes, self.mpi.nodes if self.mpi else 1)

    @property
    def estimate(self) -> float:
        """Seconds this task is expected to take, for critical-path ordering."""
        if self.duration is not None:
            return self.duration
        return self.resources.walltime or 1.0


_TASK_FIELDS = frozenset(TaskSpec.model_fields)


class _VariantOf(set[str]):
    """The fields-set the variants of one task share; it also names that task (their
    template), whose fields they read where they hold none. One per template, so that a
    variant costs its own values only."""

    __slots__ = ("template", "template_set")
    _made: weakref.WeakValueDictionary[int, _VariantOf] = weakref.WeakValueDictionary()

    @classmethod
    def of(cls, template: TaskSpec) -> _VariantOf:
        made = cls._made.get(id(template))
        if made is None or made.template is not template:
            made = cls(template.__pydantic_fields_set__)
            made.template = template
            made.template_set = frozenset(template.__pydantic_fields_set__)
            cls._made[id(template)] = made
        return made

    template: TaskSpec
    template_set: frozenset[str]


# What a sweep variant may hold of its own (TaskSpec.variant's callers set no other field).
_VARIANT_OWN = frozenset({"id", "args", "kwargs", "command"})


def resource_twin(task: TaskSpec) -> TaskSpec:
    """The task whose every field but id, arguments and command ``task`` shares: a sweep
    variant's template, else ``task`` itself. Work that reads a task's resources, kind and
    options alone (fit checks, placements, bundle groups) is then done once per sweep,
    not once per task."""
    fields = task.__pydantic_fields_set__
    if isinstance(fields, _VariantOf) and _VARIANT_OWN.issuperset(task.__dict__):
        return fields.template
    return task


class WorkflowSpec(_Spec):
    """A validated DAG of tasks: ids unique, dependencies known, no cycle."""

    name: str = "workflow"
    site: str | None = None
    bundle: bool | None = Field(
        None, description="bundle small independent function tasks; None: above some thousands"
    )
    tasks: tuple[TaskSpec, ...] = Field(..., min_length=1)

    @model_validator(mode="after")
    def _dag(self) -> WorkflowSpec:
        parents: dict[str, tuple[str, ...]] = {}
        for t in self.tasks:
            if t.id in parents:
                raise WorkflowError(f"task id {t.id!r} is used twice; task ids must be unique")
            parents[t.id] = t.after
        dag.validate(parents)
        return self

    def task(self, task_id: str) -> TaskSpec:
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise KeyError(task_id)

    def by_id(self) -> dict[str, TaskSpec]:
        return {t.id: t for t in self.tasks}


def _where(loc: tuple[int | str, ...], data: Mapping[str, Any]) -> str:
    """``('tasks', 3, 'resources')`` → ``task 'sim': resources``."""
    parts = list(loc)
    prefix = ""
    if len(parts) >= 2 and parts[0] == "tasks" and isinstance(parts[1], int):
        tasks = data.get("tasks")
        task_id: Any = None
        if isinstance(tasks, list | tuple) and parts[1] < len(tasks):
            item = tasks[parts[1]]
            task_id = item.get("id") if isinstance(item, Mapping) else getattr(item, "id", None)
        prefix = f"task {task_id!r}" if task_id else f"task #{parts[1] + 1}"
        parts = parts[2:]
    # pydantic adds union-member names (e.g. 'function-after[...]') to locations.
    path = ".".join(str(p) for p in parts if not (isinstance(p, str) and "[" in p))
    return ": ".join(x for x in (prefix, path) if x)


def _message(exc: ValidationError, data: Mapping[str, Any]) -> str:
    err = exc.errors(include_url=False)[0]
    msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    where = _where(tuple(err["loc"]), data)
    if err["type"] == "missing":
        msg = "missing required key"
    return f"{where}: {msg}" if where else msg


def parse_workflow(data: Mapping[str, Any]) -> WorkflowSpec:
    """Validate a workflow mapping (parsed YAML, built by a loader) into a spec.

    Raises :class:`WorkflowError` with one line naming the task and the key.
    """
    if not isinstance(data, Mapping):
        raise WorkflowError(
            f"a workflow must be a mapping with a 'tasks' list, got {type(data).__name__}"
        )
    try:
        return WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        raise WorkflowError(_message(exc, data)) from None


def parse_task(data: Mapping[str, Any]) -> TaskSpec:
    """Validate one task mapping; :class:`WorkflowError` names the task and the key."""
    try:
        return TaskSpec.model_validate(data)
    except ValidationError as exc:
        raise WorkflowError(f"task {data.get('id')!r}: {_message(exc, data)}") from None
