"""Edge checks of a run's software environment, before anything is submitted.

Every container a task or a pool names has its image and bind sources here
and its runtime installed (:func:`hpcorch.containers.check_container`); every
module a task loads is one the module system knows (``module is-avail``, Lmod
or Environment Modules, with the caller's ``MODULEPATH``). A failure is a
:class:`~hpcorch.errors.SpecError`: exit 2, one line naming the task and the
module or path.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping

from hpcorch.containers import check_container
from hpcorch.errors import SpecError
from hpcorch.sites.model import Site
from hpcorch.slurm.script import MODULE_INIT
from hpcorch.spec import WorkflowSpec

__all__ = ["check_software", "missing_modules"]

# Prints each module (a positional parameter) the module system does not have; exit 3
# when the shell has no `module` command at all.
_IS_AVAIL = "\n".join(
    [
        MODULE_INIT,
        "type module >/dev/null 2>&1 || exit 3",
        'for m in "$@"; do module is-avail "$m" >/dev/null 2>&1 || printf "%s\\n" "$m"; done',
    ]
)


def missing_modules(
    names: Iterable[str], env: Mapping[str, str] | None = None, timeout_s: float = 60
) -> list[str]:
    """The modules of ``names`` this machine's module system lacks; SpecError when it has
    no module system (``module`` is neither defined nor initializable)."""
    names = list(dict.fromkeys(names))
    if not names:
        return []
    try:
        proc = subprocess.run(
            ["bash", "-c", _IS_AVAIL, "hpcorch-modules", *names],
            capture_output=True,
            text=True,
            env=dict(env) if env is not None else None,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SpecError(f"modules: cannot ask the module system about {names}: {exc}") from None
    if proc.returncode == 3:
        raise SpecError(
            f"modules {', '.join(names)} are asked for, but this machine has no module system "
            "(Lmod or Environment Modules: the `module` command)"
        )
    return [line for line in proc.stdout.splitlines() if line]


def check_software(spec: WorkflowSpec, site: Site) -> None:
    """SpecError for the first missing image, bind source, runtime or module of the run."""
    containers = [(f"task {t.id!r}", t.container) for t in spec.tasks if t.container]
    if site.container is not None:
        containers.append((f"site {site.name!r}", site.container))
    containers += [
        (f"site {site.name!r} partition {p.name!r}", p.container)
        for p in site.partitions
        if p.container is not None
    ]
    for where, container in containers:
        try:
            check_container(container, where)
        except ValueError as exc:
            raise SpecError(str(exc)) from None
    wanted = {m: f"task {t.id!r}" for t in reversed(spec.tasks) for m in t.modules}
    for part in site.partitions:
        for m in part.modules:
            wanted.setdefault(m, f"site {site.name!r} partition {part.name!r}")
    missing = missing_modules(wanted)
    if missing:
        first = missing[0]
        raise SpecError(
            f"{wanted[first]}: module {first!r} is not available here (module is-avail); "
            "check its name with `module spider`, or MODULEPATH"
        )
