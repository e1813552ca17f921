"""Runs inside an existing Slurm allocation: the allocation's nodes are the workers.

A user's sbatch script that calls ``hpcorch run`` already holds nodes.
:func:`current_allocation` reads them from the job's environment (pure), and
:class:`AllocationWorkers` starts a TLS scheduler where the script runs plus
one Dask worker per node, as ONE job step of the allocation::

    srun --jobid=$SLURM_JOB_ID --overlap -N 2 --ntasks-per-node=1 \\
        python -m distributed.cli.dask_worker tls://... --resources cpus=8,...

Nothing is submitted to Slurm. The site's ``allocation:`` section decides:
``use_current: false`` ignores the allocation (the run submits its own jobs as
on a login node); ``add_allocations: true`` also lets the scaler submit the
site's usual allocations, whose workers join the same scheduler. hpcorch's own
jobs (the ``hpcorch submit`` driver, pool workers, named ``hpcorch-*``) are
never treated as a user's allocation; ``RunOptions.use_allocation`` (``HPCORCH_USE_ALLOCATION=0``)
opts out.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from hpcorch.childenv import child_env, site_secrets
from hpcorch.errors import InfrastructureError, ResourceError
from hpcorch.options import RunOptions
from hpcorch.placement.placing import knobs_resource, span_resource
from hpcorch.provision import dashboard
from hpcorch.provision.horizon import resources_arg
from hpcorch.provision.security import NO_HTTP_ENV, private_dir, temporary_security
from hpcorch.sites.model import Site
from hpcorch.slurm.connect import slurm_conf_path
from hpcorch.slurm.hostlists import compress_hostlist, expand_hostlist
from hpcorch.spec import WorkflowSpec

if TYPE_CHECKING:
    from hpcorch.provision.scaler import AllocationWatch
    from hpcorch.provision.slurm_pool import SlurmWorkers

__all__ = [
    "AllocationWorkers",
    "CurrentAllocation",
    "current_allocation",
    "parse_per_node",
    "worker_argv",
]

logger = logging.getLogger(__name__)

_MIB = 1024**2
# How long the allocation's workers may take to start and connect.
_CONNECT_TIMEOUT_S = 120.0
_UNLIMITED_S = 365 * 86400.0


@dataclass(frozen=True, slots=True)
class CurrentAllocation:
    """The nodes of the allocation this process runs in, and what each offers."""

    job_id: str
    nodes: tuple[str, ...]
    cpus: tuple[int, ...]
    """CPUs of the allocation on each node, in ``nodes`` order."""
    memory: int
    """Bytes of memory per node (0: not known; Dask then limits nothing)."""
    gpus: int
    """GPUs per node."""
    partition: str | None = None

    def groups(self) -> list[tuple[int, tuple[str, ...]]]:
        """Nodes with the same CPU count, each group one job step: ``[(cpus, nodes)]``."""
        by_cpus: dict[int, list[str]] = {}
        for node, cpus in zip(self.nodes, self.cpus, strict=True):
            by_cpus.setdefault(cpus, []).append(node)
        return [(cpus, tuple(nodes)) for cpus, nodes in by_cpus.items()]


def parse_per_node(text: str) -> tuple[int, ...]:
    """Slurm's per-node counts: ``"8(x2),4"`` → ``(8, 8, 4)``."""
    out: list[int] = []
    for item in text.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", item)
        if not match:
            raise ValueError(f"not a Slurm per-node count list: {text!r}")
        out += [int(match.group(1))] * int(match.group(2) or 1)
    return tuple(out)


def _gpus_per_node(env: Mapping[str, str]) -> int:
    if env.get("SLURM_GPUS_ON_NODE", "").isdigit():
        return int(env["SLURM_GPUS_ON_NODE"])
    listed = env.get("SLURM_JOB_GPUS") or env.get("SLURM_STEP_GPUS") or ""
    return len([g for g in listed.split(",") if g.strip()])


def current_allocation(env: Mapping[str, str] | None = None) -> CurrentAllocation | None:
    """The user's allocation this process runs in (its Slurm job's variables), or ``None``."""
    environ = os.environ if env is None else env
    job_id = environ.get("SLURM_JOB_ID")
    if not job_id:
        return None
    if environ.get("SLURM_JOB_NAME", "").startswith("hpcorch-"):
        return None  # the driver job of `hpcorch submit`, or a pool worker's job
    nodes = expand_hostlist(environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST"))
    if not nodes:
        return None
    per_node = environ.get("SLURM_JOB_CPUS_PER_NODE")
    cpus = parse_per_node(per_node) if per_node else (int(environ.get("SLURM_CPUS_ON_NODE", 1)),)
    if len(cpus) != len(nodes):
        cpus = (cpus[0],) * len(nodes)
    if environ.get("SLURM_MEM_PER_NODE", "").isdigit():
        memory = int(environ["SLURM_MEM_PER_NODE"]) * _MIB
    elif environ.get("SLURM_MEM_PER_CPU", "").isdigit():
        memory = int(environ["SLURM_MEM_PER_CPU"]) * _MIB * min(cpus)
    else:
        memory = 0
    return CurrentAllocation(
        job_id=job_id,
        nodes=nodes,
        cpus=cpus,
        memory=memory,
        gpus=_gpus_per_node(environ),
        partition=environ.get("SLURM_JOB_PARTITION"),
    )


def worker_argv(
    allocation: CurrentAllocation,
    nodes: Sequence[str],
    cpus: int,
    scheduler: str,
    *,
    tls: Mapping[str, str] | None = None,
    python: str | None = None,
    local_directory: str | None = None,
    extra: Sequence[str] = (),
    knobs: Sequence[str] = (),
) -> list[str]:
    """The job step that starts one Dask worker on each of ``nodes`` (pure).

    ``--overlap`` lets the step share the CPUs the batch script holds, and
    the tasks' own ``srun`` steps share the worker's; each worker advertises
    its node's cores, memory and GPUs as Dask resources, as pool workers do.
    """

    resources = f"cpus={cpus},memory={allocation.memory},gpus={allocation.gpus}"
    # Every walltime tier (hpcorch.provision.horizon): nothing can be added to a user's
    # allocation in time, so a task starts even when its estimate exceeds the time
    # left, as it would in the user's own script; Slurm ends it with the allocation.
    tiers = resources_arg(_UNLIMITED_S)
    if tiers:
        resources += f",{tiers}"
    # A task spanning k nodes runs as an srun step over the allocation's first k
    # nodes (hpcorch.placement.placing); any worker may start it.

    resources += "".join(f",{span_resource(k)}={cpus}" for k in range(2, len(allocation.nodes) + 1))
    # Tasks with their own Slurm knobs (QOS, constraint, ...) run here too: the
    # allocation is what the user made it.
    resources += "".join(f",{name}={cpus}" for name in knobs)
    argv = [
        "srun",
        f"--jobid={allocation.job_id}",
        "--overlap",
        f"--nodes={len(nodes)}",
        f"--ntasks={len(nodes)}",
        "--ntasks-per-node=1",
        f"--nodelist={compress_hostlist(nodes)}",
        f"--cpus-per-task={cpus}",
        # One worker dying (its node failed) must not take the others down.
        "--kill-on-bad-exit=0",
        python or sys.executable,
        "-m",
        "distributed.cli.dask_worker",
        scheduler,
        "--nthreads",
        str(cpus),
        "--nworkers",
        "1",
        "--memory-limit",
        str(allocation.memory) if allocation.memory else "0",
        "--resources",
        resources,
        "--death-timeout",
        "60",
        "--no-dashboard",
    ]
    if local_directory:
        argv += ["--local-directory", local_directory]
    for key, path in sorted((tls or {}).items()):
        argv += [f"--tls-{key.replace('_', '-')}", path]
    return [*argv, *extra]


def _write_private(path: Path, text: str) -> str:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return str(path)


def worker_tls_files(security: Any, directory: Path) -> dict[str, str]:
    """Write the workers' in-memory TLS material to files (mode 0600); ``{key: path}``."""
    private_dir(directory)
    out: dict[str, str] = {}
    for key, value in security.get_tls_config_for_role("worker").items():
        if value is None or key == "ciphers":
            continue
        out[key] = (
            _write_private(directory / f"allocation-{key}.pem", value) if "\n" in value else value
        )
    return out


def check_fits_allocation(spec: WorkflowSpec, allocation: CurrentAllocation) -> None:
    """Refuse a task that no node of the allocation can run (when nothing may be added)."""
    most = max(allocation.cpus)
    for task in spec.tasks:
        problems = []
        if task.cpus > most:
            problems.append(f"{task.cpus} cpus (nodes have {most})")
        if allocation.memory and task.resources.memory > allocation.memory:
            problems.append(
                f"{task.resources.memory / 1024**3:.1f}GiB "
                f"(nodes have {allocation.memory / 1024**3:.1f}GiB)"
            )
        if task.gpus > allocation.gpus:
            problems.append(f"{task.gpus:g} gpus (nodes have {allocation.gpus})")
        if task.nodes > len(allocation.nodes):
            problems.append(f"{task.nodes} nodes (the allocation has {len(allocation.nodes)})")
        if problems:
            raise ResourceError(
                f"task {task.id!r} needs {', '.join(problems)}, more than allocation "
                f"{allocation.job_id} offers; ask sbatch for more, or set "
                "allocation: {add_allocations: true} in the site file"
            )


class AllocationWorkers:
    """A scheduler here and one worker per node of the current allocation (job steps)."""

    def __init__(
        self,
        site: Site,
        spec: WorkflowSpec,
        run_dir: Path,
        allocation: CurrentAllocation,
        *,
        options: RunOptions | None = None,
        connect_timeout_s: float = _CONNECT_TIMEOUT_S,
    ) -> None:
        import dask.config  # noqa: PLC0415  # heavy (distributed, dask): loaded when a pool starts
        from distributed import Client, LocalCluster  # noqa: PLC0415  # heavy (distributed, dask): loaded when a pool starts

        self.site = site
        self._knobs = sorted({r for t in spec.tasks if (r := knobs_resource(t)) is not None})
        self.allocation = allocation
        self.run_dir = run_dir
        self.started = time.time()
        self._steps: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []
        self._cluster: Any = None
        self._client: Any = None
        self._added: SlurmWorkers | None = None
        if not allocation.memory:
            allocation = replace(allocation, memory=_node_memory(site, allocation))
            self.allocation = allocation
        if not site.allocation.add_allocations:
            check_fits_allocation(spec, allocation)
        log_dir = run_dir / "slurm"
        log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            if site.allocation.add_allocations:
                # The site's pools, scaled with demand, behind one scheduler our workers join.
                from hpcorch.provision.slurm_pool import SlurmWorkers  # noqa: PLC0415  # optional dependency, guarded

                self._added = SlurmWorkers(site, spec, run_dir, options=options)
                self._client = self._added.client
                security = self._added.security
                address = self._client.scheduler.address
            else:
                security = temporary_security()
                # TLS covers the scheduler's comms, not its HTTP port: serve nothing there
                # but the dashboard when asked for, on loopback (hpcorch.provision.dashboard).
                port, http_kwargs, http_config = dashboard.http_settings(
                    options.dashboard if options is not None else None
                )
                with dask.config.set(http_config):
                    self._cluster = LocalCluster(  # type: ignore[no-untyped-call]
                        n_workers=0,
                        host=_listen_host(site),
                        protocol="tls://",
                        security=security,
                        dashboard_address=http_kwargs["dashboard_address"],
                        scheduler_kwargs={"dashboard": http_kwargs["dashboard"]},
                    )
                if port is not None:
                    dashboard.announce(self._cluster.scheduler)
                self._client = Client(  # type: ignore[no-untyped-call]
                    self._cluster, security=security, set_as_default=False
                )
                address = self._cluster.scheduler_address
            tls = worker_tls_files(security, run_dir / "tls")
            self._start_steps(address, tls, log_dir)
            self._client.wait_for_workers(len(allocation.nodes), timeout=connect_timeout_s)
        except Exception as exc:
            self.close()
            if isinstance(exc, ResourceError):
                raise
            raise InfrastructureError(
                f"cannot start Dask workers on the nodes of allocation {allocation.job_id}: "
                f"{exc}; see {log_dir}/allocation-*.log"
            ) from exc
        logger.info(
            "allocation %s: %d workers on %s (scheduler %s)",
            allocation.job_id,
            len(allocation.nodes),
            ",".join(allocation.nodes),
            address,
        )

    def _start_steps(self, address: str, tls: Mapping[str, str], log_dir: Path) -> None:

        env = {**child_env(os.environ, site_secrets(self.site)), **NO_HTTP_ENV}
        conf = slurm_conf_path(self.site)
        if conf and "SLURM_CONF" not in env:
            env["SLURM_CONF"] = conf
        # The workers' attempt records name the site of this job (engine.worker).
        env["HPCORCH_SITE"] = self.site.name
        for n, (cpus, nodes) in enumerate(self.allocation.groups()):
            argv = worker_argv(
                self.allocation,
                nodes,
                cpus,
                address,
                tls=tls,
                local_directory=self.site.dask.local_directory,
                extra=self.site.dask.worker_extra_args,
                knobs=self._knobs,
            )
            log = open(log_dir / f"allocation-{n}.log", "ab")  # noqa: SIM115 (kept open)
            self._logs.append(log)
            logger.debug("starting workers: %s", " ".join(argv))
            self._steps.append(
                subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
                )
            )

    @property
    def client(self) -> Any:
        return self._client

    @property
    def sites(self) -> Mapping[str, Site]:
        """This site, and the regions of the added allocations' pools, where there are."""
        return self._added.sites if self._added is not None else {self.site.name: self.site}

    def use_monitor(self, monitor: AllocationWatch) -> None:
        """Hand the run's monitor to the added allocations' scaler, where there is one."""
        if self._added is not None:
            self._added.use_monitor(monitor)

    def kick(self) -> None:
        """Scale the added allocations now, where there are (the current one is fixed)."""
        if self._added is not None:
            self._added.kick()

    def allocations(self) -> list[dict[str, Any]]:
        """The current allocation (its nodes, not submitted by this run), and any added."""
        rows = [
            {
                "job_id": self.allocation.job_id,
                "site": self.site.name,
                "partition": self.allocation.partition,
                "nodes": len(self.allocation.nodes),
                "state": "RUNNING",
                "start": self.started,
                "end": None,
                "pool": "current",
            }
        ]
        if self._added is not None:
            rows += self._added.allocations()
        return rows

    def close(self) -> None:
        try:
            if self._added is not None:
                self._added.close()  # closes the shared client and scheduler
            elif self._client is not None:
                self._client.close()
        finally:
            self._stop_steps()
            if self._cluster is not None:
                self._cluster.close()
                self._cluster = None
            for log in self._logs:
                log.close()
            self._logs = []

    def _stop_steps(self) -> None:
        # srun passes SIGTERM on to the workers, which leave the scheduler and exit.
        for proc in self._steps:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self._steps:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("worker step %d did not stop; killing it", proc.pid)
                proc.kill()
                proc.wait()
        self._steps = []


def _listen_host(site: Site) -> str:
    """Where the scheduler listens: the site's Dask interface, else every interface.

    The workers run on other nodes, so the loopback address will not do; TLS
    (temporary certificates) keeps others out.
    """
    if site.dask.interface:
        from distributed.utils import get_ip_interface  # noqa: PLC0415  # heavy (distributed, dask): loaded when a pool starts

        return str(get_ip_interface(site.dask.interface))  # type: ignore[no-untyped-call]
    return "0.0.0.0"


def _node_memory(site: Site, allocation: CurrentAllocation) -> int:
    """A node's memory when the job's environment does not say: its partition's, else ours."""
    for p in site.partitions:
        if p.name == allocation.partition:
            return p.node.memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
