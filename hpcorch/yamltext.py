"""YAML as hpcorch reads it: PyYAML's safe loader, stricter where YAML is silent.

A key given twice in one mapping is an error naming the key and its line (plain
``safe_load`` keeps the last value without a word), and a document nested too deeply
for the parser is a YAML error, not a ``RecursionError``. Every YAML hpcorch reads
(workflows, site files, jobqueue configs) goes through :func:`load_yaml_text`.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, ScalarNode

__all__ = ["load_yaml_text"]


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                # merge keys (<<) may be overridden; other keys the base class checks
                if not isinstance(key_node, ScalarNode) or key_node.tag.endswith(":merge"):
                    continue
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise ConstructorError(
                        None,
                        None,
                        f"key {key!r} given twice (lines {seen[key]} and {line}); keep one",
                        key_node.start_mark,
                    )
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str) -> Any:
    """Parse one YAML document; :class:`yaml.YAMLError` (with ``problem``) on bad input."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except RecursionError:
        raise yaml.MarkedYAMLError(
            problem="nested too deeply (more levels than hpcorch reads)"
        ) from None
