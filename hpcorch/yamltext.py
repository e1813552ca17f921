"""YAML as hpcorch reads it: PyYAML's safe loader, stricter where YAML is silent.

A key given twice in one mapping is an error naming the key and its line (plain
``safe_load`` keeps the last value without a word), and a document nested too deeply
for the parser is a YAML error, not a ``RecursionError``. Every YAML hpcorch reads
(workflows, site files, jobqueue configs) goes through :func:`load_yaml_text`.

libyaml's C parser is used where PyYAML was built with it (its wheels are): a
100,000-task workflow parses about 10x faster than with the pure-Python one.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, ScalarNode

__all__ = ["load_yaml_text"]


# The C loader takes the same constructor hooks; the pure-Python one where libyaml is absent.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoader):  # type: ignore[valid-type,misc]
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
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def load_yaml_text(text: str) -> Any:
    """Parse one YAML document; :class:`yaml.YAMLError` (with ``problem``) on bad input."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a safe loader subclass
    except RecursionError:
        raise yaml.MarkedYAMLError(
            problem="nested too deeply (more levels than hpcorch reads)"
        ) from None
