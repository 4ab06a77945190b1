"""The Open Images class hierarchy (bbox_labels_600_hierarchy.json) and what it implies.

The JSON nests {"LabelName": MID, "Subcategory": [...]} under a root ("/m/0bl9f", Entity, in
the official files; the root is read from the file and is never a class). The same MID may
appear under several parents (a teddy bear is a toy and a bear; a flying disc is a toy and
sports equipment), so the hierarchy is a DAG: it is built from the union of all parent ->
child edges, wherever in the file they are written. "Part" lists are ignored (a face is a
part of a person, not a kind of person).

Depth 0 is a child of the root. A class's `depth` is its shallowest position; `depths` lists
every one. The two-model split of `map_to_group`:

* layer0 keeps the depth-0 classes and relabels every deeper class to the depth-0 class at
  the top of its shallowest path(s): a teddy bear (toy > teddy bear, and animal > mammal >
  carnivore > bear > teddy bear) becomes a toy only. Where several shallowest paths end at
  different depth-0 classes (flying disc: toy and sports equipment), the instance gets each.
  With expansion, every ancestor is mapped too, so the instance gets every depth-0 ancestor
  (teddy bear: toy and animal), as the Open Images challenge scores it.
* layer1 keeps every class that appears at depth 1 or deeper (depth 1 and 2, and also 3 and
  4, e.g. dog at depth 3: collapsing those to depth 2 would leave no model to predict
  them). A class that sits at depth 0 *and* deeper belongs to both layers. Instances of a
  class that is only at depth 0 are dropped; when that class has children (a person may be
  a man, a boy ...) the caller should also hide the object (`GroupDecision.gray`), so the
  model is not taught that an unlabelled person is background. With expansion, ancestors
  in layer1 are added (dog: dog, carnivore, mammal; not animal).

All of it is pure computation on dicts (plus loading the JSON): the Open Images reader
(data_prep/formats/openimages.py) decides with it what each instance is labelled in each
model, and the hierarchical ensemble (models/inference/) pairs predictions with it.
"""
from __future__ import annotations

import dataclasses
import json
from collections import deque
from pathlib import Path
from typing import Any, Iterable

from core.errors import UserError

LAYER0, LAYER1 = "layer0", "layer1"
GROUPS = (LAYER0, LAYER1)


class HierarchyError(UserError, ValueError):
    """The hierarchy JSON is malformed (not nested LabelName/Subcategory, or cyclic)."""


@dataclasses.dataclass(frozen=True)
class GroupDecision:
    """How one annotated class enters a model's records."""

    labels: tuple[str, ...]  # classes to label the instance with; empty: leave it out
    gray: bool = False  # also hide the object (its box filled with gray in the image)


class Hierarchy:
    """Parents, children and depths of every class, with cached derived lookups."""

    def __init__(self, root: str, edges: Iterable[tuple[str, str]],
                 source: str = "<hierarchy>"):
        self.root = root
        self.source = source
        self._parents: dict[str, list[str]] = {}
        self._children: dict[str, list[str]] = {}
        for parent, child in edges:
            if child == root:
                raise HierarchyError(f"{source}: the root {root} appears as a subcategory")
            if child == parent:
                raise HierarchyError(f"{source}: {child} is listed as its own subcategory")
            self._parents.setdefault(child, [])
            self._children.setdefault(child, [])
            if parent != root:
                self._parents.setdefault(parent, [])
                self._children.setdefault(parent, [])
            if parent not in self._parents[child]:
                self._parents[child].append(parent)
                if parent != root:
                    self._children[parent].append(child)
        self.classes: list[str] = list(self._parents)  # file order of first appearance
        self._depths = self._all_depths()
        self._ancestors: dict[str, tuple[str, ...]] = {}
        self._top: dict[str, tuple[str, ...]] = {}

    @classmethod
    def from_json(cls, data: Any, source: str = "<hierarchy>") -> "Hierarchy":
        if not isinstance(data, dict) or not isinstance(data.get("LabelName"), str):
            raise HierarchyError(f"{source}: not an Open Images hierarchy: the top level must "
                                 "be an object with a 'LabelName' (the root)")
        edges: list[tuple[str, str]] = []
        stack: list[tuple[dict, str | None, str]] = [(data, None, "top level")]
        while stack:  # depth-first, in file order
            node, parent, where = stack.pop()
            if parent is not None:
                edges.append((parent, node["LabelName"]))
            subcategories = node.get("Subcategory", [])
            if not isinstance(subcategories, list):
                raise HierarchyError(f"{source}: {where}: 'Subcategory' must be a list")
            children = []
            for index, child in enumerate(subcategories):
                child_where = f"{node['LabelName']} Subcategory[{index}]"
                if not isinstance(child, dict) or not isinstance(child.get("LabelName"), str) \
                        or not child["LabelName"]:
                    raise HierarchyError(f"{source}: {child_where} needs a 'LabelName' string")
                children.append((child, node["LabelName"], child_where))
            stack.extend(reversed(children))
        return cls(data["LabelName"], edges, source)

    def __contains__(self, name: object) -> bool:
        return name in self._parents

    def __len__(self) -> int:
        return len(self.classes)

    def _all_depths(self) -> dict[str, tuple[int, ...]]:
        depths: dict[str, tuple[int, ...]] = {}
        visiting: set[str] = set()

        def visit(name: str, path: tuple[str, ...]) -> tuple[int, ...]:
            if name in depths:
                return depths[name]
            if name in visiting:
                raise HierarchyError(f"{self.source}: the hierarchy has a cycle: "
                                     f"{' > '.join(path + (name,))}")
            visiting.add(name)
            found: set[int] = set()
            for parent in self._parents[name]:
                if parent == self.root:
                    found.add(0)
                else:
                    found.update(d + 1 for d in visit(parent, path + (name,)))
            visiting.discard(name)
            if not found:
                raise HierarchyError(f"{self.source}: {name} is not connected to the root "
                                     f"{self.root}")
            depths[name] = tuple(sorted(found))
            return depths[name]

        for name in self.classes:
            visit(name, ())
        return depths

    def _known(self, name: str) -> None:
        if name not in self._parents:
            raise KeyError(f"{name} is not in the hierarchy {self.source}")

    def parents(self, name: str) -> tuple[str, ...]:
        """Direct parents, without the root."""
        self._known(name)
        return tuple(p for p in self._parents[name] if p != self.root)

    def children(self, name: str) -> tuple[str, ...]:
        self._known(name)
        return tuple(self._children[name])

    def has_children(self, name: str) -> bool:
        return bool(self.children(name))

    def depths(self, name: str) -> tuple[int, ...]:
        """Every depth the class appears at (several for multi-parent classes)."""
        self._known(name)
        return self._depths[name]

    def depth(self, name: str) -> int:
        """The shallowest depth; 0 for a child of the root."""
        return self.depths(name)[0]

    def ancestors(self, name: str) -> tuple[str, ...]:
        """Every ancestor but the root, nearest first."""
        cached = self._ancestors.get(name)
        if cached is None:
            cached = tuple(self._walk(name, self._parents))
            self._ancestors[name] = cached
        return cached

    def descendants(self, name: str) -> tuple[str, ...]:
        return tuple(self._walk(name, self._children))

    def _walk(self, name: str, links: dict[str, list[str]]) -> list[str]:
        self._known(name)
        seen, order, queue = {name}, [], deque([name])
        while queue:
            for nxt in links[queue.popleft()]:
                if nxt != self.root and nxt not in seen:
                    seen.add(nxt)
                    order.append(nxt)
                    queue.append(nxt)
        return order

    def is_ancestor(self, ancestor: str, name: str) -> bool:
        return ancestor in self.ancestors(name)

    def expand(self, name: str) -> tuple[str, ...]:
        """The class and its ancestors: every label the challenge credits an instance with."""
        return (name,) + self.ancestors(name)

    def top_level(self, name: str) -> tuple[str, ...]:
        """The depth-0 classes at the top of the class's shallowest path(s)."""
        cached = self._top.get(name)
        if cached is None:
            depth = self.depth(name)
            if depth == 0:
                cached = (name,)
            else:
                found: list[str] = []
                for parent in self.parents(name):
                    if self.depth(parent) == depth - 1:
                        found.extend(t for t in self.top_level(parent) if t not in found)
                cached = tuple(found)
            self._top[name] = cached
        return cached

    def in_group(self, name: str, group: str) -> bool:
        """layer0: appears at depth 0; layer1: appears at depth 1 or deeper."""
        depths = self.depths(name)
        if group == LAYER0:
            return depths[0] == 0
        if group == LAYER1:
            return depths[-1] >= 1
        raise ValueError(f"unknown hierarchy group {group!r}; choose from {', '.join(GROUPS)}")

    def group_classes(self, group: str) -> list[str]:
        return [name for name in self.classes if self.in_group(name, group)]

    def map_to_group(self, name: str, group: str | None, expand: bool = False
                     ) -> GroupDecision:
        """The labels an instance of `name` gets in `group` (None: no grouping)."""
        sources = self.expand(name) if expand else (name,)
        if group is None:
            return GroupDecision(sources)
        labels: list[str] = []
        for source in sources:
            if group == LAYER0:
                mapped = self.top_level(source)
            else:
                mapped = (source,) if self.in_group(source, group) else ()
            labels.extend(m for m in mapped if m not in labels)
        gray = not labels and group == LAYER1 and self.has_children(name)
        return GroupDecision(tuple(labels), gray)

    def relations(self, names: Iterable[str]) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        """name -> (ancestors, descendants) restricted to `names`, for a label map."""
        wanted = [n for n in names if n in self]
        present = set(wanted)
        return {n: (tuple(a for a in self.ancestors(n) if a in present),
                    tuple(d for d in self.descendants(n) if d in present)) for n in wanted}


def load_hierarchy(path: str | Path) -> Hierarchy:
    """Reads a hierarchy JSON; errors name the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise HierarchyError(f"{path}: hierarchy file does not exist") from None
    except UnicodeDecodeError as err:
        raise HierarchyError(f"{path}: not an Open Images hierarchy JSON file (not UTF-8 "
                             f"text: {err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise HierarchyError(f"{path}: not an Open Images hierarchy JSON file (invalid JSON "
                             f"at line {err.lineno} column {err.colno}: {err.msg})") from None
    return Hierarchy.from_json(data, str(path))
