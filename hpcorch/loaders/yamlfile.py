"""hpcorch's YAML workflow format (see workflows/README.md)."""

from __future__ import annotations

from pathlib import Path

import yaml

from hpcorch.errors import WorkflowError
from hpcorch.loaders.sweep import expand_sweeps
from hpcorch.spec import WorkflowSpec, parse_workflow
from hpcorch.yamltext import load_yaml_text

__all__ = ["load_yaml"]


def load_yaml(path: Path) -> WorkflowSpec:
    try:
        data = load_yaml_text(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f": line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise WorkflowError(f"{path}{where}: {problem}") from None
    except OSError as exc:
        raise WorkflowError(f"{path}: cannot read ({exc.strerror})") from None
    if not isinstance(data, dict):
        raise WorkflowError(f"{path}: expected a mapping with 'name' and 'tasks'")
    try:
        return parse_workflow(expand_sweeps(data))
    except WorkflowError as exc:
        raise WorkflowError(f"{path}: {exc}") from None
