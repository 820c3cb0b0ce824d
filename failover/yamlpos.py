"""YAML loading that remembers where every key and value came from, so each
validation error can name file:line:column. Duplicate keys are errors (PyYAML
silently keeps the last one, which would let a typo'd override pass)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Mark:
    line: int  # 1-based
    column: int  # 1-based


@dataclass
class Loaded:
    data: Any
    marks: dict[Path_, Mark] = field(default_factory=dict)  # value positions
    key_marks: dict[Path_, Mark] = field(default_factory=dict)  # mapping-key positions
    problems: list[tuple[Path_, Mark, str]] = field(default_factory=list)

    def where(self, path: Path_, prefer_key: bool = False) -> Mark:
        """The best position for a path: the exact node, else its nearest parent."""
        p = tuple(path)
        while True:
            if prefer_key and p in self.key_marks:
                return self.key_marks[p]
            if p in self.marks:
                return self.marks[p]
            if p in self.key_marks:
                return self.key_marks[p]
            if not p:
                return Mark(1, 1)
            p = p[:-1]


class YamlSyntaxError(ValueError):
    def __init__(self, mark: Mark, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message


def _mk(node: yaml.Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


def load(text: str) -> Loaded:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        out = Loaded(None)
        out.data = _build(loader, node, (), out) if node is not None else None
        return out
    except yaml.MarkedYAMLError as e:
        m = e.problem_mark
        mark = Mark(m.line + 1, m.column + 1) if m else Mark(1, 1)
        raise YamlSyntaxError(mark, f"YAML syntax: {e.problem or e}") from None
    finally:
        loader.dispose()


def _build(loader: yaml.SafeLoader, node: yaml.Node, path: Path_, out: Loaded) -> Any:
    out.marks[path] = _mk(node)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for knode, vnode in node.value:
            if knode.tag == "tag:yaml.org,2002:merge":
                out.problems.append((path, _mk(knode), "YAML merge keys (<<) are not supported"))
                continue
            key = loader.construct_object(knode, deep=True)
            if not isinstance(key, str):
                out.problems.append((path, _mk(knode), f"keys must be strings, got {key!r}"))
                continue
            if key in result:
                out.problems.append((path + (key,), _mk(knode), f"duplicate key {key!r}"))
                continue
            out.key_marks[path + (key,)] = _mk(knode)
            result[key] = _build(loader, vnode, path + (key,), out)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, n, path + (i,), out) for i, n in enumerate(node.value)]
    return loader.construct_object(node, deep=True)
