"""Turn a workflow file into a validated :class:`~hpcorch.spec.WorkflowSpec`.

One entry point, :func:`load_workflow`, picks the reader by suffix: ``.yaml``
/ ``.yml`` (hpcorch's format), ``.json`` (a WfFormat instance written by
wfcommons) or ``.py`` (a module that builds a :class:`hpcorch.Workflow`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from hpcorch.errors import WorkflowError
from hpcorch.loaders.pyfile import load_python
from hpcorch.loaders.wfformat import load_wfformat
from hpcorch.spec import WorkflowSpec

__all__ = ["load_workflow"]


def load_workflow(path: str | os.PathLike[str], time_scale: float | None = None) -> WorkflowSpec:
    """Read and validate the workflow at ``path``.

    ``time_scale`` turns WfFormat tasks into emulated tasks that hold their
    cores for ``runtimeInSeconds * time_scale`` seconds; for YAML and Python
    workflows it scales the duration of emulated tasks.
    """
    source = Path(path)
    if time_scale is not None and not (math.isfinite(time_scale) and time_scale >= 0):
        raise WorkflowError(f"--time-scale must be a finite number >= 0, got {time_scale}")
    if not source.is_file():
        raise WorkflowError(f"{source}: no such workflow file")
    try:
        return _load(source, time_scale)
    except (RecursionError, MemoryError):
        raise WorkflowError(f"{source}: nested too deeply or too large to read") from None
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        # A WfFormat or YAML document whose values have the wrong types where a reader
        # looks them up; the spec's own validation reports everything it reaches.
        raise WorkflowError(
            f"{source}: not a valid workflow ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    except OSError as exc:
        raise WorkflowError(f"{source}: cannot read ({exc.strerror or exc})") from None


def _load(source: Path, time_scale: float | None) -> WorkflowSpec:
    suffix = source.suffix.lower()
    if suffix in (".yaml", ".yml"):
        from hpcorch.loaders.yamlfile import load_yaml  # noqa: PLC0415  # PyYAML only for YAML workflows

        spec = load_yaml(source)
    elif suffix == ".json":
        return load_wfformat(source, time_scale)  # scales the tasks' runtimes itself
    elif suffix == ".py":
        spec = load_python(source)
    else:
        raise WorkflowError(
            f"{source}: unknown workflow type {suffix!r}; use .yaml/.yml, .json (WfFormat) or .py"
        )
    return scale_durations(spec, time_scale) if time_scale is not None else spec


def scale_durations(spec: WorkflowSpec, factor: float) -> WorkflowSpec:
    """The same workflow with every emulated task's duration multiplied by ``factor``."""
    tasks = tuple(
        t.model_copy(update={"duration": t.duration * factor}) if t.duration is not None else t
        for t in spec.tasks
    )
    return spec.model_copy(update={"tasks": tasks})
