"""``hpcorch doctor``: check that a site can run a workflow, and say what to fix.

Each check ends ``ok``, ``warn`` or ``fail`` with what was found and, when not
ok, what to do. The checks themselves are pure functions of what was
observed (:func:`check_backend`, :func:`check_partitions`,
:func:`check_account`, :func:`check_command`, :func:`check_ports`); the thin
runner :func:`run_doctor` observes: it asks each configured Slurm backend for
its version, partitions and nodes, reads the user's associations, starts a
Dask scheduler on the site's interface, and runs two one-task steps (the MPI
launcher, and Python importing hpcorch on a compute node), each bounded in
time.

A failed check is either the infrastructure's (Slurm, the network or the
compute nodes are not usable: exit 3) or the site file's (it claims
partitions, shapes or an account the cluster does not have: exit 2).
"""

from __future__ import annotations

import asyncio
import getpass
import importlib.util
import logging
import os
import re
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from hpcorch.containers import Container, check_container, container_argv
from hpcorch.errors import HpcorchError
from hpcorch.mpi import choose_launcher, offered_plugins
from hpcorch.sites.loader import expand_vars
from hpcorch.sites.model import Partition, Site
from hpcorch.slurm.cli import Completed, Runner, run_command
from hpcorch.slurm.models import NodeInfo, PartitionInfo
from hpcorch.slurm.token import scrub

__all__ = [
    "Check",
    "Status",
    "check_account",
    "check_backend",
    "check_command",
    "check_partitions",
    "check_ports",
    "exit_code",
    "mpi_launcher",
    "parse_assoc",
    "run_doctor",
]

logger = logging.getLogger(__name__)

Status = Literal["ok", "warn", "fail"]
Blame = Literal["infrastructure", "config"]

# Steps wait for an allocation first; on a busy cluster that is the slow part.
STEP_TIMEOUT_S = 120.0
_IMPORT_PROBE = "import hpcorch, distributed; print(hpcorch.__version__)"
# What a pool's workers need of their image's Python: it prints what it lacks and exits 1.
_IMAGE_PROBE = (
    "import importlib.util as u, sys; "
    "m = [n for n in ('distributed', 'hpcorch') if u.find_spec(n) is None]; "
    "v = '%d.%d' % sys.version_info[:2]; "
    "print(sys.executable, 'Python', v, 'lacks ' + ', '.join(m) if m else "
    "'has distributed ' + __import__('distributed').__version__); "
    "sys.exit(1 if m else 0)"
)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str | None = None
    blame: Blame = "infrastructure"
    """Whose failure a ``fail`` is: decides the exit code."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def exit_code(checks: Sequence[Check]) -> int:
    """0 when nothing failed; 3 when the infrastructure failed; 2 when only the site file did."""
    failed = [c for c in checks if c.status == "fail"]
    if any(c.blame == "infrastructure" for c in failed):
        return 3
    return 2 if failed else 0


# -- pure checks ----------------------------------------------------------------


def check_backend(
    backend: str,
    where: str,
    *,
    version: str | None = None,
    partitions: int | None = None,
    error: str | None = None,
) -> Check:
    """Whether one Slurm backend answered (``error`` is what it raised, if it did)."""
    name = f"slurm {backend}"
    if error is None:
        return Check(name, "ok", f"{where}: Slurm {version}, {partitions} partitions")
    fixes = {
        "rest": (
            "check that slurmrestd runs and that the site's rest.url is right; a 401 means the "
            "JWT was refused: export a fresh SLURM_JWT (`scontrol token`) or fix rest.token"
        ),
        "cli": (
            "check that slurmctld is up (`scontrol ping`) and that SLURM_CONF or the site's "
            "slurm.conf points at this cluster"
        ),
        "pyslurm": "install the pyslurm release matching this Slurm, or drop pyslurm from backends",
    }
    said = "; ".join(line.strip() for line in error.splitlines() if line.strip())
    return Check(name, "fail", f"{where}: {said}", fixes.get(backend))


def _gpu_count(gres: str) -> int:
    return sum(int(n) for n in re.findall(r"gpu(?::[^:(,]+)?:(\d+)", gres))


def _shape_problems(want: Partition, node: NodeInfo) -> list[str]:
    shape = want.node
    problems = []
    if (node.sockets, node.cores_per_socket) != (shape.sockets, shape.cores_per_socket):
        problems.append(
            f"{node.name} has {node.sockets}x{node.cores_per_socket} cores, "
            f"the site says {shape.sockets}x{shape.cores_per_socket}"
        )
    if node.memory and node.memory < shape.memory:
        problems.append(
            f"{node.name} has {node.memory // 2**20} MiB, the site says {shape.memory // 2**20} MiB"
        )
    gpus = _gpu_count(node.gres)
    if gpus != shape.gpus:
        problems.append(f"{node.name} has {gpus} GPUs, the site says {shape.gpus}")
    return problems


def _limit_problems(want: Partition, got: PartitionInfo) -> list[str]:
    """Limits the site file claims beyond the partition's: jobs sized to them are refused."""
    problems = []
    if want.max_walltime_s and got.max_time_s and want.max_walltime_s > got.max_time_s:
        problems.append(
            f"MaxTime is {got.max_time_s:.0f} s, the site says max_walltime_s "
            f"{want.max_walltime_s:.0f} s"
        )
    if (
        want.max_nodes_per_job
        and got.max_nodes_per_job
        and want.max_nodes_per_job > got.max_nodes_per_job
    ):
        problems.append(
            f"MaxNodes is {got.max_nodes_per_job}, the site says {want.max_nodes_per_job}"
        )
    return problems


def check_partitions(
    site: Site, live: Sequence[PartitionInfo], nodes: Sequence[NodeInfo]
) -> list[Check]:
    """Each partition of the site file exists, with the node count and shape it claims."""
    by_name = {p.name: p for p in live}
    node_by_name = {n.name: n for n in nodes}
    checks = []
    for want in site.partitions:
        name = f"partition {want.name}"
        got = by_name.get(want.name)
        if got is None:
            checks.append(
                Check(
                    name,
                    "fail",
                    f"not in the cluster, which has {sorted(by_name) or 'no partitions'}",
                    f"rename or remove partition {want.name!r} in the site file "
                    "(`hpcorch sites detect` prints what the cluster has)",
                    "config",
                )
            )
            continue
        problems = [
            p
            for node in (node_by_name[n] for n in got.nodes if n in node_by_name)
            for p in _shape_problems(want, node)
        ]
        problems += _limit_problems(want, got)
        if problems:
            checks.append(
                Check(
                    name,
                    "fail",
                    "; ".join(problems),
                    "make the partition's node shape and limits match the cluster "
                    "(`hpcorch sites detect` prints them)",
                    "config",
                )
            )
            continue
        usable = [n for n in got.nodes if n in node_by_name and node_by_name[n].usable]
        detail = f"{len(got.nodes)} nodes ({len(usable)} usable), state {got.state}"
        if len(got.nodes) < want.nodes:
            checks.append(
                Check(
                    name,
                    "fail",
                    f"{detail}; the site says {want.nodes}",
                    f"set nodes: {len(got.nodes)} for partition {want.name!r}",
                    "config",
                )
            )
        elif got.state.upper() != "UP" or not usable:
            checks.append(
                Check(
                    name,
                    "warn",
                    detail,
                    "jobs will wait: ask the admins why the partition or its nodes are down "
                    "(`sinfo -R`)",
                )
            )
        elif len(got.nodes) > want.nodes:
            checks.append(Check(name, "ok", f"{detail}; the site file uses {want.nodes} of them"))
        else:
            checks.append(Check(name, "ok", detail))
    return checks


def parse_assoc(text: str) -> list[tuple[str, str, str]]:
    """``(account, user, partition)`` rows of ``sacctmgr -P -n show assoc``.

    The command is run with ``format=account,user,partition``.
    """
    rows = []
    for line in text.splitlines():
        parts = [*line.strip().split("|"), "", ""][:3]
        if parts[0]:
            rows.append((parts[0], parts[1], parts[2]))
    return rows


def check_account(
    site: Site, user: str, assoc: Sequence[tuple[str, str, str]] | None, error: str | None = None
) -> Check:
    """The site's account is one of the user's associations (or the user has some account)."""
    if assoc is None:
        return Check(
            "account",
            "warn",
            f"cannot read associations: {error}",
            "without slurmdbd the account cannot be checked; jobs will tell",
        )
    mine = sorted({a for a, u, _ in assoc if u == user})
    if site.account is not None:
        if site.account in mine:
            return Check("account", "ok", f"{user} may charge account {site.account!r}")
        return Check(
            "account",
            "fail",
            f"{user} has no association with account {site.account!r}; "
            f"their accounts: {mine or 'none'}",
            "set account: in the site file to one of these, or ask the admins for access",
            "config",
        )
    if mine:
        return Check("account", "ok", f"{user} has accounts {mine}; jobs use the default one")
    return Check(
        "account",
        "fail",
        f"{user} has no association on this cluster",
        "ask the cluster's admins to add you to an account (sacctmgr add user)",
        "config",
    )


def check_command(
    name: str,
    argv: Sequence[str],
    done: Completed | None,
    error: str | None = None,
    *,
    required: bool = True,
) -> Check:
    """A command that must exit 0 (``done`` None: it could not run; ``error`` says why)."""
    shown = shlex.join(argv)
    bad: Status = "fail" if required else "warn"
    if done is None:
        return Check(name, bad, f"`{shown}`: {error}", _fix(name, error or ""))
    if done.returncode == 0:
        out = done.stdout.strip().splitlines()
        return Check(name, "ok", f"`{shown}` works" + (f": {out[-1]}" if out else ""))
    # Banners of dashes (Open MPI's) carry nothing; squeeze the rest to one line.
    text = " ".join(re.sub(r"-{4,}", " ", done.stderr or done.stdout).split())
    short = text if len(text) <= 200 else text[:197] + "..."
    return Check(name, bad, f"`{shown}` exited {done.returncode}: {short}", _fix(name, text))


def _fix(name: str, text: str) -> str:
    if "as root" in text:
        return (
            "mpirun refuses to run as root: run hpcorch as a normal user, or set "
            "OMPI_ALLOW_RUN_AS_ROOT=1 and OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"
        )
    if "pmix" in text.lower() or "mpi type" in text.lower():
        return (
            "this Slurm lacks the MPI plugin the site's mpi.launcher asks for (`srun --mpi=list`)"
        )
    if "ModuleNotFoundError" in text or "No module named" in text:
        return (
            "install hpcorch where compute nodes see it (a shared virtualenv), or load it in the "
            "site's prologue (modules, commands)"
        )
    if "took more than" in text:
        return "no node was free in time: try again when the partition is less busy"
    if "not found" in text:
        return "install the launcher, or set mpi.launcher in the site file"
    if name.startswith("mpi"):
        return "fix the MPI installation or the site's mpi.launcher"
    return "check that jobs start on the default partition (`srun -N1 true`)"


def check_ports(address: str | None, error: str | None, tls: str | None) -> Check:
    """A Dask scheduler listened and took a connection (``tls``: the TLS probe's outcome)."""
    if address is None:
        return Check(
            "dask ports",
            "fail",
            f"a Dask scheduler could not listen: {error}",
            "set dask.interface in the site file to an interface the compute nodes reach "
            "(`ip addr`), and check that no firewall blocks high ports",
        )
    return Check("dask ports", "ok", f"scheduler listened on {address}; TLS: {tls}")


# -- the runner -------------------------------------------------------------------


def _temporary_security(security: Any) -> Any:
    # A self-signed certificate for this probe only (needs the cryptography package).
    return security.temporary()


async def _probe_scheduler(interface: str | None, tls: bool) -> str:
    from distributed import Scheduler  # noqa: PLC0415  # CLI fast path: --help does not load it
    from distributed.comm.core import connect  # noqa: PLC0415  # CLI fast path: --help does not load it

    # The scheduler always serves HTTP too; a random port keeps it off a busy 8787.
    kwargs: dict[str, Any] = {
        "interface": interface,
        "port": 0,
        "dashboard": False,
        "dashboard_address": ":0",
    }
    connection: dict[str, Any] = {}
    if tls:
        from distributed.security import Security  # noqa: PLC0415  # CLI fast path: --help does not load it

        security = _temporary_security(Security)
        kwargs.update(protocol="tls", security=security)
        connection = security.get_connection_args("client")
    async with Scheduler(**kwargs) as scheduler:
        comm = await connect(scheduler.address, timeout=10, **connection)  # type: ignore[no-untyped-call]
        await comm.close()
        return str(scheduler.address)


def probe_ports(interface: str | None, tls_required: bool = False) -> Check:
    """Start a Dask scheduler on ``interface`` (plain, then over TLS) and connect to it.

    Slurm sites need TLS: the engine's scheduler there listens on ``tls://``.
    """
    try:
        address = asyncio.run(_probe_scheduler(interface, tls=False))
    except Exception as exc:  # any failure to listen is the finding itself
        return check_ports(None, f"{type(exc).__name__}: {exc}", None)
    if importlib.util.find_spec("cryptography") is None:  # Security.temporary needs it
        if tls_required:
            return Check(
                "dask ports",
                "fail",
                f"scheduler listened on {address}, but TLS certificates cannot be made: "
                "the cryptography package is missing",
                "pip install cryptography (the engine's scheduler on Slurm sites uses tls://)",
            )
        return check_ports(address, None, "not checked (pip install cryptography for tls://)")
    try:
        tls_address = asyncio.run(_probe_scheduler(interface, tls=True))
    except Exception as exc:
        return Check(
            "dask ports",
            "fail" if tls_required else "warn",
            f"scheduler listened on {address}, but not over TLS: {type(exc).__name__}: {exc}",
            "check the TLS settings in the Dask configuration (distributed.comm.tls)",
        )
    return check_ports(address, None, f"ok ({tls_address})")


def _slurm_env(site: Site, env: Mapping[str, str]) -> dict[str, str]:
    from hpcorch.slurm.connect import slurm_env  # noqa: PLC0415  # CLI fast path: --help does not load it

    return slurm_env(site, env)


def check_image(
    where: str, container: Container, done: Completed | None, error: str | None = None
) -> Check:
    """Whether ``container``'s image has a Python with distributed (and hpcorch) for workers
    (probed on this machine: the runtime and image must be here as on the nodes)."""
    name = f"container image ({where})"
    fix = (
        f"install distributed (same version as here) and hpcorch into {container.image}'s "
        f"Python ({container.python}), e.g. pip install distributed==<version> hpcorch; or set "
        "the container's python to the image's interpreter that has them"
    )
    if done is None:
        return Check(name, "fail", f"{container.image}: {error}", fix, "config")
    out = (done.stdout.strip().splitlines() or [""])[-1]
    if done.returncode == 0:
        return Check(name, "ok", f"{container.image}: {out}")
    text = out or " ".join((done.stderr or "").split())[:200]
    return Check(name, "fail", f"{container.image}: {text}", fix, "config")


def site_containers(site: Site) -> list[tuple[str, Container]]:
    """``(where, container)`` for the site's container and each partition's own."""
    found = [(f"site {site.name}", site.container)] if site.container else []
    found += [(f"partition {p.name}", p.container) for p in site.partitions if p.container]
    return found


def _check_images(
    site: Site, runner: Runner, env: Mapping[str, str], timeout: float
) -> list[Check]:
    checks = []
    for where, container in site_containers(site):
        try:
            check_container(container, where)
        except ValueError as exc:
            name = f"container image ({where})"
            checks.append(Check(name, "fail", str(exc), "fix the site's container", "config"))
            continue
        argv = container_argv(container, [container.python, "-c", _IMAGE_PROBE])
        checks.append(check_image(where, container, *_run(runner, argv, env, timeout)))
    return checks


def _run(
    runner: Runner, argv: Sequence[str], env: Mapping[str, str], timeout: float
) -> tuple[Completed | None, str | None]:
    try:
        return runner(argv, None, env, timeout), None
    except HpcorchError as exc:
        return None, str(exc)


def mpi_launcher(site: Site, runner: Runner, env: Mapping[str, str]) -> tuple[str, ...]:
    """The launcher MPI tasks get on this cluster: ``mpi.launcher``, or ``mpi.fallback``
    where ``srun --mpi=list`` lacks the plugin the launcher asks for."""
    if not site.mpi.fallback:
        return tuple(site.mpi.launcher)
    done, _ = _run(runner, ["srun", "--mpi=list"], env, 30)
    offered = None
    if done is not None and done.returncode == 0:
        offered = offered_plugins(done.stdout + done.stderr)
    return choose_launcher(site.mpi.launcher, site.mpi.fallback, offered)


def _step_argv(
    site: Site, command: Sequence[str], launcher: Sequence[str] = ("srun",)
) -> list[str]:
    """A one-task job on the default partition, charged to the site's account."""
    partition = site.partition()
    argv = [*launcher, "-N1", "-n1", "--time=2", f"--partition={partition.name}"]
    argv.append("--job-name=hpcorch-doctor")
    if site.account:
        argv.append(f"--account={site.account}")
    return [*argv, *command]


def _backends(site: Site, env: Mapping[str, str]) -> list[tuple[str, str, Any]]:
    """``(name, where, client or error text)`` for each configured backend."""
    from hpcorch.slurm.connect import connect  # noqa: PLC0415  # CLI fast path: --help does not load it
    from hpcorch.slurm.fallback import FallbackClient  # noqa: PLC0415  # CLI fast path: --help does not load it

    assert site.slurm is not None
    where = {
        "cli": f"SLURM_CONF={_slurm_env(site, env).get('SLURM_CONF', '(default)')}",
        "rest": expand_vars(site.slurm.rest.url, env) if site.slurm.rest else "",
        "pyslurm": "libslurm",
    }
    out: list[tuple[str, str, Any]] = []
    try:
        client = connect(site, env)
    except HpcorchError as exc:
        return [(b, where[b], str(exc)) for b in site.slurm.backends]
    clients = client.backends if isinstance(client, FallbackClient) else [client]
    found = {c.name: c for c in clients}
    for name in site.slurm.backends:
        out.append((name, where[name], found.get(name, f"backend {name!r} is not available here")))
    return out


def run_doctor(
    site: Site,
    *,
    env: Mapping[str, str] | None = None,
    runner: Runner = run_command,
    probe: Callable[[str | None, bool], Check] = probe_ports,
    step_timeout_s: float = STEP_TIMEOUT_S,
) -> list[Check]:
    """Run every check that applies to ``site``, in order."""
    environ = dict(os.environ if env is None else env)
    checks: list[Check] = []
    if site.kind == "local":
        checks.append(probe(site.dask.interface, False))
        argv = [sys.executable, "-c", _IMPORT_PROBE]
        checks.append(check_command("python", argv, *_run(runner, argv, environ, step_timeout_s)))
        argv = [*site.mpi.launcher, "-n", "1", "true"]
        done, error = _run(runner, argv, environ, step_timeout_s)
        checks.append(check_command("mpi launcher", argv, done, error=error, required=False))
        checks.extend(_check_images(site, runner, environ, step_timeout_s))
        return checks

    command_env = _slurm_env(site, environ)
    secrets = [environ.get("SLURM_JWT")]
    live: tuple[list[PartitionInfo], list[NodeInfo]] | None = None
    for name, where, client in _backends(site, environ):
        if isinstance(client, str):
            checks.append(check_backend(name, where, error=client))
            continue
        try:
            version = client.version
            partitions = client.partitions()
            nodes = client.nodes()
        except HpcorchError as exc:
            checks.append(check_backend(name, where, error=scrub(str(exc), *secrets)))
            continue
        finally:
            client.close()
        checks.append(check_backend(name, where, version=version, partitions=len(partitions)))
        live = live or (partitions, nodes)
    if live is None:
        # Nothing else can be checked without Slurm.
        return checks
    checks.extend(check_partitions(site, *live))

    user = environ.get("USER") or getpass.getuser()
    argv = [
        "sacctmgr",
        "-P",
        "-n",
        "show",
        "assoc",
        f"user={user}",
        "format=account,user,partition",
    ]
    done, error = _run(runner, argv, command_env, 30)
    if done is not None and done.returncode != 0:
        error = done.stderr.strip() or f"exit {done.returncode}"
        done = None
    checks.append(check_account(site, user, parse_assoc(done.stdout) if done else None, error))

    checks.append(probe(site.dask.interface, True))

    launcher = mpi_launcher(site, runner, command_env)
    if launcher and os.path.basename(launcher[0]) == "srun":
        argv = _step_argv(site, ["true"], launcher)
    else:
        argv = [*launcher, "-n", "1", "true"]
    checks.append(
        check_command("mpi launcher", argv, *_run(runner, argv, command_env, step_timeout_s))
    )

    argv = _step_argv(site, [sys.executable, "-c", _IMPORT_PROBE])
    checks.append(
        check_command("python on compute", argv, *_run(runner, argv, command_env, step_timeout_s))
    )
    checks.extend(_check_images(site, runner, command_env, step_timeout_s))
    return checks
