"""The argv a command task's attempt runs: its setup and modules, then its container (pure).

A command task with neither runs its argv as given. With ``modules``,
``module_purge`` or ``setup`` it runs under ``bash -c``: the lines
:func:`hpcorch.slurm.script.prologue_lines` renders (``set -e`` first, so a
module that does not load or a setup line that fails ends the attempt),
then ``exec "$@"`` with the argv as bash's positional parameters: no user
text is spliced into a shell word. With a ``container`` the argv is the
runtime's (:func:`hpcorch.containers.container_argv`), started after the
setup, so modules prepare the host side (the runtime's own module, say). An
MPI task's ranks each run this argv under ``srun``: each rank does the setup
and starts its own container (the hybrid model).
"""

from __future__ import annotations

from collections.abc import Sequence

from hpcorch.containers import container_argv, runtime_own_codes
from hpcorch.sites.model import Prologue
from hpcorch.slurm.script import prologue_lines
from hpcorch.spec import TaskSpec

__all__ = ["SETUP_ARGV0", "command_argv", "failure_name", "setup_script"]

SETUP_ARGV0 = "hpcorch-setup"  # bash's $0 in the setup script: named in its error messages


def setup_script(task: TaskSpec) -> str | None:
    """The bash script of the task's modules and setup, ending by exec'ing its argv; None
    when the task has neither."""
    if not (task.modules or task.module_purge or task.setup):
        return None
    prologue = Prologue(
        modules=task.modules,
        module_purge=task.module_purge,
        commands=(task.setup,) if task.setup else (),
    )
    return "\n".join(["set -e", *prologue_lines(prologue), 'exec "$@"']) + "\n"


def command_argv(task: TaskSpec, run_dir: str | None = None) -> tuple[str, ...]:
    """What a command task's attempt runs; ``run_dir`` is bound into its container."""
    assert task.command is not None
    argv: Sequence[str] = task.command
    if task.container is not None:
        # a relative cwd is the worker's business: the container starts where the image says
        cwd = task.cwd if task.cwd and task.cwd.startswith("/") else None
        argv = container_argv(
            task.container,
            argv,
            gpus=task.gpus > 0,
            env_names=task.env,
            workdir=cwd,
            extra_binds=[d for d in (run_dir, cwd) if d],
        )
    script = setup_script(task)
    if script is not None:
        argv = ["bash", "-c", script, SETUP_ARGV0, *argv]
    return tuple(argv)


def failure_name(task: TaskSpec) -> tuple[str | None, tuple[int, ...]]:
    """What a failed attempt's message names instead of its wrapper (bash, the runtime), and
    the exit codes that are the wrapper's own (then the wrapper is named): ``(None, ())``
    when the task runs its argv as given."""
    assert task.command is not None
    wrapped = task.container is not None or setup_script(task) is not None
    if not wrapped:
        return None, ()
    name = task.command[0] if setup_script(task) is None else f"{task.command[0]} (or its setup)"
    if task.container is None:
        return name, ()
    own = runtime_own_codes(task.container.runtime)
    if own is None:
        return None, ()
    return name, own
