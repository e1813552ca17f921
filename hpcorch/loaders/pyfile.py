"""Python workflow files: a module that builds a :class:`hpcorch.Workflow`.

The module either defines exactly one module-level ``Workflow`` object or a
``build()`` function that returns one. Its functions are pickled by value so
workers need not import the file.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hpcorch.api import Workflow
from hpcorch.errors import WorkflowError
from hpcorch.spec import WorkflowSpec

__all__ = ["load_python"]


@contextmanager
def _user_code(path: Path, doing: str) -> Iterator[None]:
    """The workflow file's own code: whatever it raises, or exits with, is bad input."""
    try:
        yield
    except WorkflowError as exc:
        raise WorkflowError(f"{path}: {exc}") from None
    except SystemExit as exc:
        # sys.exit() while building a workflow ends nothing: the workflow is what is wrong
        raise WorkflowError(
            f"{path}: called sys.exit({exc.code!r}) while loading; a workflow file must "
            "define a Workflow or build() and leave running it to hpcorch"
        ) from None
    except Exception as exc:
        raise WorkflowError(f"{path}: {doing}: {type(exc).__name__}: {exc}") from exc


def load_python(path: Path) -> WorkflowSpec:
    import cloudpickle  # type: ignore[import-untyped]  # noqa: PLC0415  # only when a Python workflow is loaded

    module_name = f"hpcorch_workflow_{path.stem}_{abs(hash(path.resolve())):x}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise WorkflowError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    cloudpickle.register_pickle_by_value(module)
    with _user_code(path, "failed to import"):
        spec.loader.exec_module(module)
    build = getattr(module, "build", None)
    if callable(build):
        with _user_code(path, "build() raised"):
            built = build()
        if not isinstance(built, Workflow):
            raise WorkflowError(f"{path}: build() returned {type(built).__name__}, not Workflow")
        return built.spec()
    found = {name: v for name, v in vars(module).items() if isinstance(v, Workflow)}
    if len(found) != 1:
        names = ", ".join(found) or "none"
        raise WorkflowError(
            f"{path}: define exactly one module-level Workflow or a build() function "
            f"(found: {names})"
        )
    return next(iter(found.values())).spec()
