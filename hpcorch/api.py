"""The Python API for simulation codes: declare tasks, get futures, run.

::

    import hpcorch

    wf = hpcorch.Workflow("demo")

    @wf.task(cpus=2, memory="1GiB")
    def simulate(seed: int) -> float: ...

    @wf.task
    def mean(*values: float) -> float: ...

    runs = [simulate(seed) for seed in range(8)]   # futures, nothing runs yet
    sweep = wf.map(simulate, range(100_000))       # one task per item, declared fast
    total = mean(*runs)                            # dependencies by passing futures
    prep = wf.add(["python", "prep.py"], id="prep")  # a command task
    result = wf.run(site="local")                  # blocks; raises RunError on failure
    result.result(total)

    with wf.submit(site="local") as handle:        # returns at once
        ...                                        # keep computing
        handle.result(total)

    wf.run(site="dev", regions="eiger", budget="20 SU", scaling="simple")

``run`` and ``submit`` take the options ``hpcorch run`` takes (``regions``,
``budget``, ``scaling``; unset ones come from the ``HPCORCH_*`` variables, see
:mod:`hpcorch.environment`), or a whole :class:`~hpcorch.options.RunOptions`.

Calling a decorated function records a task and returns a :class:`TaskFuture`;
``wf.add`` does the same for a callable, a ``"module:name"`` string or an argv
list. Options reserved by ``add`` (``id``, ``after``, ``cpus``, ``memory``,
``gpus``, ``nodes``, ``walltime``, ``retries``, ``priority``, ``tags``,
``memoize``, ``mpi``, ``distributed``, ``inputs``, ``env``, ``cwd``, ``bundle``, and for
command tasks ``container``, ``modules``, ``module_purge``, ``setup``) are not passed to the task.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from hpcorch.containers import Container
from hpcorch.environment import run_options
from hpcorch.errors import RunError, WorkflowError
from hpcorch.options import RunOptions
from hpcorch.policies.retry import RetryConfig
from hpcorch.policies.state import Budget
from hpcorch.sites.resolve import resolve_regions
from hpcorch.spec import (
    DistributedSpec,
    MpiSpec,
    ResourceSpec,
    TaskRef,
    TaskSpec,
    WorkflowSpec,
    check_values,
)

if TYPE_CHECKING:
    from hpcorch.engine import RunHandle

__all__ = ["RunResult", "TaskFuture", "Workflow"]

_PLAIN = frozenset({int, float, str, bool, bytes, type(None)})
_OPTIONS = ("cpus", "memory", "gpus", "nodes", "walltime", "gpu_sharing")


@dataclass(frozen=True)
class TaskFuture:
    """A task declared in a :class:`Workflow`; pass it to other tasks to depend on it."""

    workflow: Workflow
    id: str

    def __repr__(self) -> str:
        return f"TaskFuture({self.id!r})"

    def result(self, timeout: float | None = None) -> Any:
        """The task's value from the workflow's latest run or submission."""
        return self.workflow._latest_result(self.id, timeout)


def _to_refs(value: Any, found: list[str]) -> Any:
    if isinstance(value, TaskFuture):
        found.append(value.id)
        return TaskRef(id=value.id)
    if isinstance(value, list | tuple):
        return type(value)(_to_refs(v, found) for v in value)
    if isinstance(value, dict):
        return {k: _to_refs(v, found) for k, v in value.items()}
    return value


class RunResult:
    """The outcome of :meth:`Workflow.run`: values of function tasks, fetched once."""

    def __init__(self, run_id: str, run_dir: Path, state: str, values: dict[str, Any]) -> None:
        self.run_id = run_id
        self.run_dir = run_dir
        self.state = state
        self._values = values

    def result(self, task: TaskFuture | str) -> Any:
        task_id = task.id if isinstance(task, TaskFuture) else task
        if task_id not in self._values:
            raise KeyError(f"no result for task {task_id!r}; only function tasks have results")
        return self._values[task_id]

    def __repr__(self) -> str:
        return f"RunResult({self.run_id!r}, state={self.state!r})"


class Workflow:
    """A DAG of tasks built in Python. Nothing runs until :meth:`run` or :meth:`submit`."""

    def __init__(
        self, name: str = "workflow", site: str | None = None, bundle: bool | None = None
    ) -> None:
        self.name = name
        self.site = site
        self.bundle = bundle
        """Bundle small independent function tasks (None: when there are some thousands)."""
        self._tasks: dict[str, TaskSpec] = {}
        self._names: dict[str, int] = {}
        self._handle: RunHandle | None = None
        self._result: RunResult | None = None

    # -- declaring tasks --------------------------------------------------------

    def _new_id(self, base: str) -> str:
        count = self._names.get(base, 0) + 1
        self._names[base] = count
        task_id = base if count == 1 else f"{base}-{count}"
        while task_id in self._tasks:
            count += 1
            self._names[base] = count
            task_id = f"{base}-{count}"
        return task_id

    def add(
        self,
        target: Callable[..., Any] | str | Sequence[str],
        *args: Any,
        id: str | None = None,
        after: Iterable[TaskFuture | str] = (),
        retries: int = 0,
        priority: int = 0,
        tags: Iterable[str] = (),
        memoize: bool = False,
        mpi: MpiSpec | dict[str, Any] | None = None,
        distributed: DistributedSpec | dict[str, Any] | None = None,
        inputs: Iterable[str] = (),
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        container: Container | dict[str, Any] | None = None,
        modules: Iterable[str] = (),
        module_purge: bool = False,
        setup: str | None = None,
        resources: ResourceSpec | dict[str, Any] | None = None,
        cpus: int | None = None,
        memory: int | str | None = None,
        gpus: float | None = None,
        nodes: int | None = None,
        walltime: float | str | None = None,
        gpu_sharing: bool | None = None,
        qos: str | None = None,
        constraint: str | None = None,
        reservation: str | None = None,
        account: str | None = None,
        exclusive: bool = False,
        bundle: bool | None = None,
        **kwargs: Any,
    ) -> TaskFuture:
        """Declare a task: a callable or ``"module:name"`` (function) or an argv list (command).

        ``qos``, ``constraint`` (e.g. ``"gpu&hbm80g"``), ``reservation``, ``account`` and
        ``exclusive`` are the Slurm knobs of the jobs it runs in (a pool of its own)."""
        res: dict[str, Any] = (
            resources.model_dump() if isinstance(resources, ResourceSpec) else dict(resources or {})
        )
        for name, value in zip(
            _OPTIONS, (cpus, memory, gpus, nodes, walltime, gpu_sharing), strict=True
        ):
            if value is not None:
                res[name] = value
        deps: list[str] = []
        fields: dict[str, Any] = {}
        if isinstance(target, list | tuple):
            if args or kwargs:
                raise WorkflowError(
                    "a command task takes no args/kwargs; put them in the argv list"
                )
            fields["command"] = _to_refs(tuple(target), deps)
            if deps:
                raise WorkflowError("a command argv cannot contain futures; use after=[...]")
            base = Path(str(target[0])).name if target else "command"
        elif callable(target) or isinstance(target, str):
            fields["function"] = target
            fields["args"] = _to_refs(tuple(args), deps)
            fields["kwargs"] = _to_refs(dict(kwargs), deps)
            base = getattr(target, "__name__", None) or str(target).rpartition(":")[2]
        else:
            kind = type(target).__name__
            raise WorkflowError(
                f"add() takes a callable, 'module:name' or an argv list, not {kind}"
            )
        for item in after:
            deps.append(item.id if isinstance(item, TaskFuture) else str(item))
        for dep in deps:
            if dep not in self._tasks:
                raise WorkflowError(f"task depends on unknown task {dep!r}; declare it first")
        task_id = id if id is not None else self._new_id(base)
        if task_id in self._tasks:
            raise WorkflowError(f"task id {task_id!r} is already used in workflow {self.name!r}")
        try:
            spec = TaskSpec(
                id=task_id,
                after=tuple(dict.fromkeys(deps)),
                retries=retries,
                priority=priority,
                tags=tuple(tags),
                memoize=memoize,
                mpi=MpiSpec.model_validate(mpi) if isinstance(mpi, dict) else mpi,
                distributed=(
                    DistributedSpec.model_validate(distributed)
                    if isinstance(distributed, dict)
                    else distributed
                ),
                inputs=tuple(inputs),
                env=dict(env or {}),
                cwd=cwd,
                container=(
                    Container.model_validate(container)
                    if isinstance(container, dict)
                    else container
                ),
                modules=tuple(modules),
                module_purge=module_purge,
                setup=setup,
                resources=ResourceSpec.model_validate(res) if res else ResourceSpec(),
                qos=qos,
                constraint=constraint,
                reservation=reservation,
                account=account,
                exclusive=exclusive,
                bundle=bundle,
                **fields,
            )
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise WorkflowError(f"task {task_id!r}: {_first_error(exc)}") from None
        self._tasks[task_id] = spec
        return TaskFuture(self, task_id)

    def map(
        self,
        target: Callable[..., Any] | str,
        *iterables: Iterable[Any],
        id: str | None = None,
        **options: Any,
    ) -> list[TaskFuture]:
        """One task per item: ``target(item)`` (several iterables: their items zipped, as the
        builtin ``map``); ``options`` as :meth:`add` takes them, for every task.

        Tasks are ``<id>-0``, ``<id>-1``, ... (``id`` defaults to the function's name). The
        iterables are read as they go, never held in a list; the first task is validated, the
        others are copies of it with their own arguments (checked for size), so a sweep of a
        million tasks is declared in seconds. Items holding futures go the :meth:`add` way.
        """
        if not iterables:
            raise WorkflowError("map() takes a function and at least one iterable")
        base = id if id is not None else getattr(target, "__name__", None) or str(target)
        base = base.rpartition(":")[2]
        futures: list[TaskFuture] = []
        template: TaskSpec | None = None
        for i, args in enumerate(zip(*iterables, strict=False)):
            task_id = f"{base}-{i}"
            found: list[str] = []
            # plain values (the usual sweep) need no walk for futures nor a size check
            plain = all(type(a) in _PLAIN for a in args)
            refs = args if plain else _to_refs(args, found)
            if template is None or found:
                fut = self.add(target, *args, id=task_id, **options)
                if template is None and not found:
                    template = self._tasks[task_id]
                futures.append(fut)
                continue
            if task_id in self._tasks:
                raise WorkflowError(
                    f"task id {task_id!r} is already used in workflow {self.name!r}"
                )
            if not plain:
                try:
                    check_values(refs)
                except ValueError as exc:
                    raise WorkflowError(f"task {task_id!r}: args: {exc}") from None
            self._tasks[task_id] = template.variant(id=task_id, args=refs)
            futures.append(TaskFuture(self, task_id))
        return futures

    @overload
    def task(self, fn: Callable[..., Any]) -> Callable[..., TaskFuture]: ...

    @overload
    def task(
        self, fn: None = None, **options: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., TaskFuture]]: ...

    def task(self, fn: Callable[..., Any] | None = None, **options: Any) -> Any:
        """Decorator: calling the function declares a task with ``options`` (see :meth:`add`)."""

        def decorate(func: Callable[..., Any]) -> Callable[..., TaskFuture]:
            @functools.wraps(func)
            def declare(*args: Any, **kwargs: Any) -> TaskFuture:
                return self.add(func, *args, **options, **kwargs)

            return declare

        return decorate(fn) if fn is not None else decorate

    # -- running ----------------------------------------------------------------

    def spec(self) -> WorkflowSpec:
        """The validated, frozen spec of the tasks declared so far."""
        if not self._tasks:
            raise WorkflowError(f"workflow {self.name!r} has no tasks; add some first")
        return WorkflowSpec(
            name=self.name, site=self.site, bundle=self.bundle, tasks=tuple(self._tasks.values())
        )

    def options(
        self,
        site: str | None = None,
        *,
        regions: str | Sequence[str] | None = None,
        budget: str | Budget | None = None,
        scaling: str | None = None,
        retry_config: RetryConfig | None = None,
        options: RunOptions | None = None,
        account: str | None = None,
        qos: str | None = None,
    ) -> RunOptions:
        """The run's options: ``options`` (else those the environment sets) with each
        keyword given in place of its own; regions are checked to be Slurm sites."""
        base = options if options is not None else run_options()
        built = base.build(
            site=site or self.site,
            regions=regions,
            budget=budget,
            scaling=scaling,
            retry=retry_config,
            account=account,
            qos=qos,
        )
        resolve_regions(built.regions)
        return built

    def submit(
        self,
        site: str | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        retry_config: RetryConfig | None = None,
        *,
        regions: str | Sequence[str] | None = None,
        budget: str | Budget | None = None,
        scaling: str | None = None,
        options: RunOptions | None = None,
        account: str | None = None,
        qos: str | None = None,
    ) -> RunHandle:
        """Start the run in the background and return its :class:`~hpcorch.engine.RunHandle`.

        ``regions`` (site names, or one comma-separated string), ``budget``
        (``"20 SU"``, ``"50 EUR"``), ``scaling`` (``"demand"``, ``"simple"``),
        ``account`` and ``qos`` are ``hpcorch run``'s ``--regions``, ``--budget``,
        ``--scaling``, ``--account`` and ``--qos``;
        ``retry_config`` (:class:`hpcorch.policies.retry.RetryConfig`) tunes the
        retry policy, e.g. its backoff between attempts.
        """
        from hpcorch.engine import start_run  # noqa: PLC0415  # the engine loads distributed: importing the API stays light

        built = self.options(
            site,
            regions=regions,
            budget=budget,
            scaling=scaling,
            retry_config=retry_config,
            options=options,
            account=account,
            qos=qos,
        )
        self._handle = start_run(self.spec(), site=built.site, run_dir=run_dir, options=built)
        return self._handle

    def run(
        self,
        site: str | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        check: bool = True,
        retry_config: RetryConfig | None = None,
        *,
        regions: str | Sequence[str] | None = None,
        budget: str | Budget | None = None,
        scaling: str | None = None,
        options: RunOptions | None = None,
        account: str | None = None,
        qos: str | None = None,
    ) -> RunResult:
        """Run to the end; fetch function results; raise :class:`RunError` if a task failed.

        Takes :meth:`submit`'s options. Every function task's value comes back to
        this process; to fetch only some, use :meth:`submit` and ``handle.result(task)``.
        """
        with self.submit(
            site,
            run_dir,
            retry_config,
            regions=regions,
            budget=budget,
            scaling=scaling,
            options=options,
            account=account,
            qos=qos,
        ) as handle:
            summary = handle.wait()
            engine = handle.engine
            wanted = {
                tid: fut
                for tid, fut in engine.futures.items()
                if self._tasks[tid].function is not None and engine.state[tid] == "succeeded"
            }
            # One gather for all of them, not one round trip per task.
            fetched = engine.client.gather(list(wanted.values()))
            values = dict(zip(wanted, fetched, strict=True))
            values.update(engine.values)  # tasks that ran in bundles
        self._result = RunResult(summary.run_id, summary.run_dir, summary.state, values)
        if check and not summary.ok:
            lines = "; ".join(
                f"{f.task_id}: {f.failure_class}: {f.message}" for f in summary.failures[:5]
            )
            raise RunError(f"run {summary.run_id} {summary.state}: {summary.counts}; {lines}")
        return self._result

    def _latest_result(self, task_id: str, timeout: float | None) -> Any:
        if self._handle is not None and not self._handle._closed:
            return self._handle.result(task_id, timeout)
        if self._result is not None:
            return self._result.result(task_id)
        raise RunError(f"task {task_id!r} has not run; call run() or submit() first")


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        err = errors(include_url=False)[0]
        loc = ".".join(str(p) for p in err["loc"] if "[" not in str(p))
        msg = str(err["msg"]).removeprefix("Value error, ")
        return f"{loc}: {msg}" if loc else msg
    return str(exc)
