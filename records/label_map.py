"""Label maps in the Object Detection API's `label_map.pbtxt` text format.

A label map pairs each class name written in the records (image/object/class/text) with its
1-based id (image/object/class/label). Parsing goes through the OD API's own protobuf schema,
so its files (single or double quotes, comments, display_name) load unchanged, and a typo is
reported with its line and column.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable, Sequence

from google.protobuf import text_format

from core.atomic_io import write_text_atomic
from core.errors import UserError
from records.protos import string_int_label_map_pb2 as label_map_pb2
from records.tfrecord_io import is_remote


class LabelMapError(UserError, ValueError):
    """A label map file is malformed or inconsistent."""


@dataclasses.dataclass(frozen=True)
class LabelMapItem:
    id: int
    name: str
    display_name: str = ""
    ancestor_ids: tuple[int, ...] = ()
    descendant_ids: tuple[int, ...] = ()
    instance_count: int | None = None

    @property
    def label(self) -> str:
        """What a person should read: the display name if there is one."""
        return self.display_name or self.name


class LabelMap:
    """An ordered, validated set of label-map items with lookups both ways."""

    def __init__(self, items: Iterable[LabelMapItem], source: str = "<label map>"):
        self.items = sorted(items, key=lambda item: item.id)
        self.source = source
        self._by_id: dict[int, LabelMapItem] = {}
        self._by_name: dict[str, LabelMapItem] = {}
        for item in self.items:
            if item.id < 1:
                raise LabelMapError(
                    f"{source}: item {item.name!r} has id {item.id}; ids start at 1 "
                    "(0 is the background)")
            if not item.name:
                raise LabelMapError(f"{source}: item with id {item.id} has no name")
            if item.id in self._by_id:
                raise LabelMapError(f"{source}: id {item.id} is used twice "
                                    f"({self._by_id[item.id].name!r} and {item.name!r})")
            if item.name in self._by_name:
                raise LabelMapError(f"{source}: name {item.name!r} is used twice")
            self._by_id[item.id] = item
            self._by_name[item.name] = item

    @classmethod
    def from_names(cls, names: Sequence[str], display_names: Sequence[str] | None = None
                   ) -> "LabelMap":
        """Ids 1..K in the order given."""
        display_names = display_names or [""] * len(names)
        return cls(LabelMapItem(i + 1, n, d) for i, (n, d) in enumerate(zip(names, display_names)))

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelMap) and self.items == other.items

    @property
    def max_id(self) -> int:
        return self.items[-1].id if self.items else 0

    @property
    def names(self) -> list[str]:
        return [item.name for item in self.items]

    def id_of(self, name: str) -> int:
        try:
            return self._by_name[name].id
        except KeyError:
            raise LabelMapError(f"{self.source}: no class named {name!r}") from None

    def name_of(self, label_id: int) -> str:
        try:
            return self._by_id[label_id].name
        except KeyError:
            raise LabelMapError(f"{self.source}: no class with id {label_id}") from None

    def get(self, label_id: int) -> LabelMapItem | None:
        return self._by_id.get(label_id)

    def label_of(self, label_id: int) -> str:
        """What to write on a picture: the display name, or the id when it is not mapped
        (a model may predict an id the label map at hand does not have)."""
        item = self._by_id.get(int(label_id))
        return item.label if item is not None else str(int(label_id))

    def has_name(self, name: str) -> bool:
        return name in self._by_name

    def to_proto(self) -> label_map_pb2.StringIntLabelMap:
        proto = label_map_pb2.StringIntLabelMap()
        for item in self.items:
            entry = proto.item.add(name=item.name, id=item.id)
            if item.display_name:
                entry.display_name = item.display_name
            entry.ancestor_ids.extend(item.ancestor_ids)
            entry.descendant_ids.extend(item.descendant_ids)
            if item.instance_count is not None:
                entry.instance_count = item.instance_count
        return proto


def parse_label_map(text: str, source: str = "<label map>") -> LabelMap:
    proto = label_map_pb2.StringIntLabelMap()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as err:
        raise LabelMapError(f"{source}:{err}") from None
    items = []
    for entry in proto.item:
        if not entry.HasField("id"):
            raise LabelMapError(f"{source}: item {entry.name!r} has no id")
        items.append(LabelMapItem(
            id=entry.id, name=entry.name, display_name=entry.display_name,
            ancestor_ids=tuple(entry.ancestor_ids), descendant_ids=tuple(entry.descendant_ids),
            instance_count=entry.instance_count if entry.HasField("instance_count") else None))
    return LabelMap(items, source=source)


def read_label_map(path: str | Path) -> LabelMap:
    """Reads a label_map.pbtxt; errors name the file, line and column."""
    if is_remote(path):  # gs://... label maps beside records on cloud storage
        import tensorflow as tf

        if not tf.io.gfile.exists(str(path)):
            raise LabelMapError(f"label map {path} does not exist")
        with tf.io.gfile.GFile(str(path), "r") as f:
            return parse_label_map(f.read(), source=str(path))
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LabelMapError(f"label map {path} does not exist") from None
    return parse_label_map(text, source=str(path))


def format_label_map(label_map: LabelMap) -> str:
    return text_format.MessageToString(label_map.to_proto(), as_utf8=True)


def write_label_map(label_map: LabelMap, path: str | Path) -> Path:
    """Writes atomically (temporary file, then rename)."""
    return write_text_atomic(path, format_label_map(label_map))
