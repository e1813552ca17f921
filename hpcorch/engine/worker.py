"""What runs on a Dask worker: one task attempt, and the record of it.

:func:`execute` runs a function, a command (argv list, output to files in
the run directory) or an emulated task (holds its cores for a duration).
Each attempt appends a small record (times, worker, node, Slurm job, exit
code, failure class) to a buffer in the worker process; the driver collects
the buffer in batches with :func:`drain`, so no per-task message goes to the
driver and results stay on the workers.

Placement (:mod:`hpcorch.placement.placing`): an attempt first takes a slot of
its node from the worker's slot plugin (cores and GPUs no other running task
holds; NVLink pairs, cores near the GPUs). A command runs confined to it
(``CUDA_VISIBLE_DEVICES``, ``OMP_NUM_THREADS``, CPU affinity where allowed); a
function sees it through :func:`current_slot` and, where CuPy has a GPU, runs
on the slot's first GPU. An MPI task runs as an ``srun`` step inside the
allocation the worker runs in (``SLURM_JOB_ID``), over its first nodes, and
its record names each rank's node. The record's start is when the slot was
obtained and its end comes before the slot is given back, so the records of
two tasks that held the same GPU never overlap in time.

Logs: a command writes ``<run dir>/logs/<task>.<n>.out`` and ``.err`` (0600); a
function attempt's prints, logging records and traceback go to the same names,
routed by its thread (:mod:`hpcorch.engine.tasklog`), as do an MPI function
step's ranks' output.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import importlib
import json
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcorch import gpu, gpu_usage
from hpcorch.childenv import child_env
from hpcorch.engine import tasklog, watchdog
from hpcorch.engine.retry import TaskFailed
from hpcorch.gpu_env import GpuVendor, visible_gpus
from hpcorch.mpi import build_srun_step_argv, choose_launcher, offered_plugins, run_mpi_function
from hpcorch.placement.placing import MpiStep, Placing, rank_nodes
from hpcorch.placement.plugin import PLUGIN_NAME
from hpcorch.placement.request import Slot
from hpcorch.provision.reaper import refuse_cancelled, tracked
from hpcorch.slurm.hostlists import expand_hostlist
from hpcorch.spec import TaskRef
from hpcorch.training import newest_checkpoint, pick_port, summary, torch_env

__all__ = [
    "BundleOutcome",
    "Payload",
    "TaskFailed",
    "current_slot",
    "drain",
    "execute",
    "execute_bundle",
    "load_result",
]

logger = logging.getLogger(__name__)

_BUFFER: collections.deque[dict[str, Any]] = collections.deque()
_IDENTITY: dict[str, Any] = {}
_LOCAL = threading.local()

# Variables of the worker's own batch job that srun would read as options of
# an MPI step (a whole-node job's --cpus-per-task, --mem, --ntasks-per-node).
_JOB_OPTIONS = (
    "SLURM_CPUS_PER_TASK",
    "SLURM_CPU_BIND",
    "SLURM_DISTRIBUTION",
    "SLURM_GPUS_PER_TASK",
    "SLURM_MEM_PER_CPU",
    "SLURM_MEM_PER_GPU",
    "SLURM_MEM_PER_NODE",
    "SLURM_NNODES",
    "SLURM_NPROCS",
    "SLURM_NTASKS",
    "SLURM_NTASKS_PER_NODE",
    "SLURM_TRES_PER_TASK",
    "SLURM_JWT",
)


@dataclass(frozen=True, slots=True)
class Payload:
    """Everything a worker needs for one attempt; small, so it pickles fast."""

    run_id: str
    task_id: str
    n: int
    kind: str
    target: Any  # callable or "mod:attr" | argv tuple | duration seconds
    deps: tuple[str, ...] = ()  # parent ids, in the order their values are passed
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    has_refs: bool = False
    log_dir: str | None = None
    result_path: str | None = None
    memo_path: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()  # more names of secret variables (the site's token)
    cwd: str | None = None
    timeout: float | None = None
    memory: int = 0  # bytes an emulated task really allocates
    memory_request: int = 0  # bytes requested, for diagnosing a failure
    placing: Placing | None = None  # a slot on the node, or an MPI step (placement.placing)
    # a command task under a wrapper (setup's bash, a container runtime): the name its failure
    # gives, unless the wrapper ended with one of its own codes (engine.commands.failure_name)
    program: str | None = None
    wrapper_codes: tuple[int, ...] = ()


def _identity() -> dict[str, Any]:
    if not _IDENTITY:
        try:
            from distributed import get_worker  # noqa: PLC0415  # optional dependency, guarded

            worker: str | None = get_worker().address
        except ValueError:
            worker = None
        _IDENTITY.update(
            worker=worker,
            node=os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
            job_id=os.environ.get("SLURM_JOB_ID"),
            # the site of that job (job ids are per cluster); set by the job's prologue
            site=os.environ.get("HPCORCH_SITE") or None,
        )
    return _IDENTITY


def current_slot() -> Slot | None:
    """The slot (node, cores, GPUs) of the task running in this thread; None outside one."""
    slot: Slot | None = getattr(_LOCAL, "slot", None)
    return slot


def _slot_plugin() -> Any:
    """This worker's slot plugin, or None (no Dask worker, or no plugin registered)."""

    try:
        from distributed import get_worker  # noqa: PLC0415  # optional dependency, guarded

        plugin = get_worker().plugins.get(PLUGIN_NAME)
    except ValueError:
        return None
    if plugin is None or getattr(plugin, "allocator", None) is None:
        return None
    return plugin


def _joined(values: Any) -> str:
    return ",".join(map(str, values))


@contextmanager
def _placed(p: Payload, record: dict[str, Any]) -> Iterator[tuple[Slot | None, Any]]:
    """Hold the attempt's slot on this node (when it has a request and the worker a plugin)."""
    request = p.placing.request if p.placing is not None else None
    plugin = _slot_plugin() if request is not None else None
    if request is None or plugin is None:
        if request is not None:
            logger.debug("worker has no slot plugin; task %s runs unplaced", p.task_id)
        yield None, None
        return
    slot = plugin.allocator.allocate(request)
    try:
        # The attempt starts when it holds its slot (it may have waited for one).
        record.update(
            start=time.time(), node=slot.node, cores=_joined(slot.cores), gpus=_joined(slot.gpus)
        )
        _BUFFER.append(dict(record))
        yield slot, plugin
    finally:
        record["end"] = time.time()  # before the slot is free for the next task
        plugin.allocator.release(slot)


@contextmanager
def _in_slot(slot: Slot | None, plugin: Any) -> Iterator[None]:
    """Make ``slot`` this thread's :func:`current_slot`; select its GPU where CuPy has one."""
    _LOCAL.slot = slot
    try:
        if slot is not None and slot.gpus:
            _use_gpu(slot, plugin.gpu_names)
        yield
    finally:
        _LOCAL.slot = None


def _use_gpu(slot: Slot, names: tuple[str, ...]) -> None:

    if not gpu.gpu_available():
        return
    # CUDA and HIP number the devices this process sees (its CUDA_/ROCR_VISIBLE_DEVICES) from 0.
    visible = list(visible_gpus(os.environ) or ())
    name = names[slot.gpus[0]] if names else str(slot.gpus[0])
    ordinal = visible.index(name) if name in visible else slot.gpus[0]
    import cupy  # noqa: PLC0415  # optional GPU dependency

    cupy.cuda.Device(ordinal).use()  # the current device is per thread


def _resolve(target: Any) -> Callable[..., Any]:
    if callable(target):
        func: Callable[..., Any] = target
        return func
    module, _, attr = str(target).partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{target} is not callable")
    fn: Callable[..., Any] = obj
    return fn


def _substitute(value: Any, results: dict[str, Any]) -> Any:
    if isinstance(value, TaskRef):
        return results[value.id]
    if isinstance(value, list | tuple):
        return type(value)(_substitute(v, results) for v in value)
    if isinstance(value, dict):
        return {k: _substitute(v, results) for k, v in value.items()}
    return value


def _store(path: str, value: Any) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def load_result(path: str | None) -> Any:
    """A result stored by an earlier attempt or run; ``None`` when none was stored."""
    if path is None or not os.path.exists(path):
        return None
    with open(path, "rb") as fh:
        return pickle.load(fh)  # written by this run's own workers


def _task_env(p: Payload, run_dir: str | None) -> dict[str, str]:
    # The worker's environment without its secrets; what the task declares, as declared.
    env = {**child_env(os.environ, p.secrets), **p.env}
    env.update(HPCORCH_RUN_ID=p.run_id, HPCORCH_TASK_ID=p.task_id)
    env["HPCORCH_ATTEMPT"] = str(p.n)
    if run_dir is not None:
        env["HPCORCH_RUN_DIR"] = run_dir
    return env


def _allocation_nodes() -> list[str]:
    """The nodes of the Slurm allocation this worker runs in (empty outside Slurm)."""

    nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
    return list(expand_hostlist(nodelist)) if nodelist else []


@functools.cache
def _srun_mpi_plugins() -> frozenset[str] | None:
    """The MPI plugins this Slurm's srun offers (None: srun could not say)."""
    try:
        done = subprocess.run(
            ["srun", "--mpi=list"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.warning("srun --mpi=list: %s; keeping the site's mpi.launcher", exc)
        return None
    if done.returncode != 0:
        logger.warning(
            "srun --mpi=list exited %s; keeping the site's mpi.launcher", done.returncode
        )
        return None
    return offered_plugins(done.stdout + done.stderr)


def _step(
    p: Payload, step: MpiStep, env: Mapping[str, str], record: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Options of the MPI step (for :func:`hpcorch.mpi.build_srun_step_argv`) and its env.

    Records the node of each rank: the step runs on the allocation's first
    nodes, ranks filling one node before the next.
    """
    job_id = os.environ.get("SLURM_JOB_ID")
    launcher = step.launcher
    if job_id is not None and step.fallback:
        launcher = choose_launcher(step.launcher, step.fallback, _srun_mpi_plugins())
    options: dict[str, Any] = {"job_id": job_id, "launcher": launcher, "bind": step.bind}
    step_env = {k: v for k, v in {**env, **step.env}.items() if k not in _JOB_OPTIONS}
    nodes = _allocation_nodes()
    if job_id is not None:  # an srun step, or mpirun starting its daemons with srun
        try:
            ranks = rank_nodes(step, nodes)
        except Exception as exc:
            raise TaskFailed(
                f"{exc}; the task went to a worker whose allocation is too small", None
            ) from None
        nodelist = nodes[: step.nodes]
        options.update(
            memory=step.memory,
            nodelist=nodelist,
            layout=step.layout(),
            job_name=f"hpcorch-{p.task_id}",
        )
    else:  # mpiexec on this machine
        ranks = [str(record.get("node"))] * step.ranks
    record.update(node=ranks[0], ranks=_joined(ranks))
    if step.torch is not None:
        step_env.update(_training_env(p, step, ranks[0], record))
    _BUFFER.append(dict(record))
    return options, step_env


# Ports this worker handed to trainings lately: two started in the same instant
# (before either rank 0 binds its port) must not both find the same one free.
_PORTS_GIVEN: collections.deque[tuple[float, int]] = collections.deque()
_PORT_HOLD_S = 120.0


def _node_address(node: str) -> str:
    """An address of ``node`` every rank can reach (its NodeAddr where the name does
    not resolve, as on clusters whose node names are Slurm's only)."""
    try:
        return socket.gethostbyname(node)
    except OSError:
        pass
    try:
        out = subprocess.run(
            ["scontrol", "show", "node", "-o", node],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return node
    for word in out.split():
        if word.startswith("NodeAddr="):
            return word.partition("=")[2]
    return node


def _training_env(p: Payload, step: MpiStep, master: str, record: dict[str, Any]) -> dict[str, str]:
    """The rendezvous, backend and checkpoint of a training's ranks; the attempt's record
    gets the address, the port and the checkpoint it resumes from."""
    assert step.torch is not None
    now = time.time()
    while _PORTS_GIVEN and _PORTS_GIVEN[0][0] < now - _PORT_HOLD_S:
        _PORTS_GIVEN.popleft()
    port = step.torch.port or pick_port(
        f"{p.run_id}/{p.task_id}/{p.n}", taken=frozenset(q for _, q in _PORTS_GIVEN)
    )
    _PORTS_GIVEN.append((now, port))
    directory = step.torch.checkpoint_dir
    if directory is not None:
        directory = str(Path(p.cwd or ".", directory).absolute())
        Path(directory).mkdir(parents=True, exist_ok=True)
    checkpoint = newest_checkpoint(directory)
    address = _node_address(master)
    record["training"] = summary(address, port, checkpoint)
    torch_step = dataclasses.replace(step.torch, checkpoint_dir=directory)
    # each rank's threads: its cores, unless the task set its own (not the worker's value)
    threads = None if "OMP_NUM_THREADS" in p.env else step.cpus_per_rank
    env = torch_env(
        torch_step, master_addr=address, port=port, checkpoint=checkpoint, threads=threads
    )
    gpu_dir = _gpu_dir(p)
    gpu_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    env["HPCORCH_GPU_USAGE_DIR"] = str(gpu_dir)  # each rank writes its GPUs' figures there
    return env


def _gpu_dir(p: Payload) -> Path:
    return Path(p.log_dir or ".", f"{p.task_id}.{p.n}.gpu").absolute()


def _gpu_usage(p: Payload) -> str | None:
    """The training attempt's GPU figures from its ranks' files, for the journal."""
    parts = []
    for path in sorted(_gpu_dir(p).glob("rank-*.json")):
        try:
            parts.append(gpu_usage.from_mapping(json.loads(path.read_text())))
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            continue  # a rank killed while writing: the others stand
    usage = gpu_usage.merge(parts)
    return gpu_usage.encode(usage) if usage is not None else None


def _mpi_argv(p: Payload, step: MpiStep, options: Mapping[str, Any]) -> list[str]:
    command = list(p.target)
    if step.torch is not None:  # each rank learns its torch.distributed variables first
        command = [sys.executable, "-m", "hpcorch.torch_run", "--", *command]
    return build_srun_step_argv(step, command, **options)


def _run_command(
    p: Payload,
    slot: Slot | None = None,
    gpu_names: tuple[str, ...] | None = None,
    record: dict[str, Any] | None = None,
    vendor: GpuVendor | None = None,
) -> None:
    argv = list(p.target)
    log_dir = Path(p.log_dir or ".")
    log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    stem = log_dir / f"{p.task_id}.{p.n}"
    env = _task_env(p, str(log_dir.parent))
    step = p.placing.mpi if p.placing is not None else None
    memory_limit = p.memory_request
    if step is not None:
        options, env = _step(p, step, env, record if record is not None else {})
        argv = _mpi_argv(p, step, options)
        memory_limit = 0  # srun --mem holds each node's ranks to it; srun itself is small
    with _private(f"{stem}.out") as out, _private(f"{stem}.err") as err:
        # Its own session: its whole tree can be ended as one group (provision.reaper).
        io: dict[str, Any] = {
            "stdout": out,
            "stderr": err,
            "stdin": subprocess.DEVNULL,
            "start_new_session": True,
        }
        try:
            if slot is not None:
                from hpcorch.placement.plugin import start_in_slot  # noqa: PLC0415  # optional dependency, guarded

                proc = start_in_slot(argv, slot, env, gpu_names, vendor, cwd=p.cwd, **io)
            else:
                proc = subprocess.Popen(argv, env=env, cwd=p.cwd, **io)
        except OSError as exc:
            raise TaskFailed(f"cannot start {argv[0]!r}: {exc.strerror}", 127) from None
        with tracked(proc, p.run_id, (p.task_id, p.n)):
            ended = watchdog.wait(proc, timeout=p.timeout, memory_limit=memory_limit)
    returncode, peak = ended.returncode, ended.memory_peak
    if ended.timed_out:
        raise TaskFailed(
            f"{argv[0]} ran past its walltime of {p.timeout:g}s; see {stem}.err",
            timed_out=True,
            memory_peak=peak,
        )
    if ended.over_memory:
        raise TaskFailed(
            f"{argv[0]} used {(peak or 0) // 2**20} MiB, above the {p.memory_request // 2**20} MiB "
            f"it asked for, and was killed; see {stem}.err",
            None,
            signal.SIGKILL,
            memory_peak=peak,
        )
    if returncode < 0:
        raise TaskFailed(
            f"{argv[0]} killed by signal {-returncode}; see {stem}.err",
            None,
            -returncode,
            memory_peak=peak,
        )
    if returncode != 0:
        name = argv[0]
        if step is None and p.program is not None and returncode not in p.wrapper_codes:
            name = p.program  # the wrapper passed the task's own exit code on
        raise TaskFailed(
            f"{name} exited with {returncode}; see {stem}.err", returncode, memory_peak=peak
        )


def _private(path: str) -> Any:
    """``path`` opened for writing, made 0600 (a task's output is its owner's alone)."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    return os.fdopen(fd, "wb")


def _captured(p: Payload) -> AbstractContextManager[Any]:
    """A function attempt's own log (:mod:`hpcorch.engine.tasklog`), when it has a log dir."""
    if p.log_dir is None:
        return nullcontext()
    return tasklog.capture(f"{p.log_dir}/{p.task_id}.{p.n}")  # str: per attempt, no pathlib


def _emulate(p: Payload) -> None:
    ballast = None
    if p.memory:
        ballast = bytearray(p.memory)
        ballast[::4096] = b"\x01" * len(range(0, p.memory, 4096))  # touch every page
    time.sleep(float(p.target))
    del ballast


def _call(p: Payload, dep_values: tuple[Any, ...], record: dict[str, Any]) -> Any:
    fn = _resolve(p.target)
    args, kwargs = p.args, p.kwargs
    if p.has_refs:
        results = dict(zip(p.deps, dep_values, strict=True))
        args = _substitute(p.args, results)
        kwargs = _substitute(p.kwargs, results)
    step = p.placing.mpi if p.placing is not None else None
    if step is None:
        return fn(*args, **kwargs)
    # An mpi4py function task: every rank calls fn(comm, *args, **kwargs).

    # The step's payload lies in <run dir>/mpi; its ranks know the run directory.
    options, env = _step(p, step, _task_env(p, str(Path(step.workdir).parent)), record)
    log = tasklog.current()
    return run_mpi_function(
        fn,
        step,
        args=args,
        kwargs=kwargs,
        workdir=step.workdir,
        env=env,
        timeout=p.timeout,
        output=log.write if log is not None else None,  # the ranks' output, to the log
        module="hpcorch.torch_run" if step.torch is not None else "hpcorch.mpi_run",
        **options,
    )


def execute(p: Payload, *dep_values: Any) -> Any:
    """Run one attempt of one task; parent values arrive as ``dep_values`` (see ``p.deps``)."""
    refuse_cancelled(p.run_id)
    record: dict[str, Any] = {"task_id": p.task_id, "n": p.n, "run_id": p.run_id}
    record.update(_identity())
    record["start"] = time.time()
    _BUFFER.append(dict(record))
    value: Any = None
    try:
        with _placed(p, record) as (slot, plugin):
            if p.kind == "function":
                with _in_slot(slot, plugin), _captured(p):
                    value = _call(p, dep_values, record)
            elif p.kind == "command":
                _run_command(
                    p, slot, plugin.gpu_names if plugin else None, record,
                    getattr(plugin, "vendor", None),
                )  # fmt: skip
            else:
                _emulate(p)
    except Exception as exc:
        if isinstance(exc, TaskFailed):
            exc.node = record.get("node")
        # The failure class is the driver's to write: it also knows the node's and the
        # allocation's fate (hpcorch.engine.recovery).
        record.update(
            exit_code=exc.exit_code if isinstance(exc, TaskFailed) else None,
            message=_message(exc)[:500],
        )
        raise
    else:
        record["exit_code"] = 0
        if value is not None:
            for path in (p.result_path, p.memo_path):
                if path:
                    _store(path, value)
        if p.memo_path:
            Path(p.memo_path + ".done").touch(mode=0o600)
        return value
    finally:
        record.setdefault("end", time.time())
        if "training" in record:
            record["gpu_usage"] = _gpu_usage(p)
        _BUFFER.append(record)


@dataclass(frozen=True, slots=True)
class BundleOutcome:
    """What a bundle sends back: each failed task's exception, the values asked for, and the
    seconds its tasks took together (the bundling policy sizes the next bundles from it)."""

    errors: dict[str, BaseException]
    values: dict[str, Any]
    seconds: float


def _portable(exc: Exception) -> BaseException:
    """``exc``, or a RuntimeError saying the same where it does not pickle (it must travel)."""
    try:
        pickle.dumps(exc)
    except Exception:
        return RuntimeError(_message(exc))
    return exc


def execute_bundle(payloads: tuple[Payload, ...], keep_values: bool) -> BundleOutcome:
    """Run several tasks one after the other in this thread, each as :func:`execute` runs it
    alone (own attempt record, log, stored result); a failure ends only its own task."""
    errors: dict[str, BaseException] = {}
    values: dict[str, Any] = {}
    started = time.perf_counter()
    for p in payloads:
        try:
            value = execute(p)
        except Exception as exc:
            errors[p.task_id] = _portable(exc)
        else:
            if keep_values:
                values[p.task_id] = value
    return BundleOutcome(errors, values, time.perf_counter() - started)


def _message(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, TaskFailed) else f"{type(exc).__name__}: {exc}"


def drain(run_id: str) -> list[dict[str, Any]]:
    """Pop this worker's attempt records for ``run_id``; a start and its end merge into one."""
    merged: dict[tuple[str, int], dict[str, Any]] = {}
    keep: list[dict[str, Any]] = []
    while True:
        try:
            rec = _BUFFER.popleft()
        except IndexError:
            break
        if rec.get("run_id") != run_id:
            keep.append(rec)
            continue
        key = (rec["task_id"], rec["n"])
        if key in merged:
            merged[key].update(rec)
        else:
            merged[key] = rec
    _BUFFER.extend(keep)
    return list(merged.values())
