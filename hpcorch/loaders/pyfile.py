"""Python workflow files: a module that builds a :class:`hpcorch.Workflow`.

The module either defines exactly one module-level ``Workflow`` object or a
``build()`` function that returns one. Its functions are pickled by value so
workers need not import the file.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from hpcorch.api import Workflow
from hpcorch.errors import WorkflowError
from hpcorch.spec import WorkflowSpec

__all__ = ["load_python"]


def load_python(path: Path) -> WorkflowSpec:
    import cloudpickle  # type: ignore[import-untyped]  # noqa: PLC0415  # only when a Python workflow is loaded

    module_name = f"hpcorch_workflow_{path.stem}_{abs(hash(path.resolve())):x}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise WorkflowError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    cloudpickle.register_pickle_by_value(module)
    try:
        spec.loader.exec_module(module)
    except WorkflowError as exc:
        raise WorkflowError(f"{path}: {exc}") from None
    except Exception as exc:
        raise WorkflowError(f"{path}: failed to import: {type(exc).__name__}: {exc}") from exc
    build = getattr(module, "build", None)
    if callable(build):
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
