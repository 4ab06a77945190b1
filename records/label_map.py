"""Label maps in the Object Detection API's `label_map.pbtxt` text format.

A label map pairs each class name written in the records (image/object/class/text) with its
1-based id (image/object/class/label). Parsing goes through the OD API's own protobuf schema,
so its files (single or double quotes, comments, display_name) load unchanged, and a typo is
reported with its line and column. As the OD API's decoder does, a class/text may hold an
item's display_name instead of its name (its Open Images and COCO label maps name items by
MID, "/m/0bt9lr", and keep the text, "dog", in display_name): `item_for_text` finds either.

Ids need not be contiguous: COCO's category ids 1..90 with gaps stay the label-map ids, as
in the OD API's mscoco_label_map.pbtxt. When a converter renumbers them 1..K instead
(--contiguous_ids), the source's ids are kept beside the label map in category_ids.json, a
file of its own so that the label map stays readable by the OD API; COCO results are mapped
back through it.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Iterable, Sequence

from google.protobuf import text_format

from core.atomic_io import write_text_atomic
from core.errors import UserError
from records.protos import string_int_label_map_pb2 as label_map_pb2
from records.tfrecord_io import is_remote

CATEGORY_IDS_NAME = "category_ids.json"  # label-map id -> source category id, beside the map
MAX_LABEL_ID = 2 ** 31 - 1  # StringIntLabelMapItem.id is an int32


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
        self._by_display_name: dict[str, list[LabelMapItem]] = {}
        for item in self.items:
            if item.id < 1:
                raise LabelMapError(
                    f"{source}: item {item.name!r} has id {item.id}; ids start at 1 "
                    "(0 is the background)")
            if item.id > MAX_LABEL_ID:
                raise LabelMapError(
                    f"{source}: item {item.name!r} has id {item.id}; a label map holds ids up "
                    f"to {MAX_LABEL_ID} (an int32)")
            if not item.name:
                raise LabelMapError(f"{source}: item with id {item.id} has no name")
            if item.id in self._by_id:
                raise LabelMapError(f"{source}: id {item.id} is used twice "
                                    f"({self._by_id[item.id].name!r} and {item.name!r})")
            if item.name in self._by_name:
                raise LabelMapError(f"{source}: name {item.name!r} is used twice")
            self._by_id[item.id] = item
            self._by_name[item.name] = item
            if item.display_name:
                self._by_display_name.setdefault(item.display_name, []).append(item)

    @classmethod
    def from_names(cls, names: Sequence[str], display_names: Sequence[str] | None = None,
                   ids: Sequence[int] | None = None) -> "LabelMap":
        """Ids 1..K in the order given, or `ids` (the source's, e.g. COCO category ids)."""
        display_names = display_names or [""] * len(names)
        ids = ids or range(1, len(names) + 1)
        return cls(LabelMapItem(i, n, d) for i, n, d in zip(ids, names, display_names))

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

    def item_for_text(self, text: str) -> LabelMapItem | None:
        """The item a class/text means: by name, else by display name (as the OD API's
        decoder looks both up); None when neither matches. A display name shared by several
        items cannot say which is meant: LabelMapError."""
        item = self._by_name.get(text)
        if item is not None:
            return item
        items = self._by_display_name.get(text, [])
        if len(items) > 1:
            raise LabelMapError(
                f"{self.source}: display name {text!r} belongs to ids "
                f"{', '.join(str(i.id) for i in items)}, so a class/text {text!r} cannot say "
                "which is meant; write the item's name instead")
        return items[0] if items else None

    def matches(self, label_id: int, text: str) -> bool:
        """Whether class/text `text` names item `label_id` (its name or display name)."""
        item = self._by_id.get(label_id)
        return item is not None and text in (item.name, item.display_name)

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


# --- category_ids.json: the source's category ids of a renumbered label map ----------------

def category_ids_path(label_map_path: str | Path) -> Path:
    """Where the category ids of the label map at `label_map_path` are kept."""
    return Path(label_map_path).parent / CATEGORY_IDS_NAME


def format_category_ids(category_ids: dict[int, int | str], source: str) -> str:
    """The text of category_ids.json: label-map id -> the source's category id."""
    return json.dumps({
        "about": "label-map id -> the category id of the source annotations. The label map "
                 "beside this file numbers the classes 1..K (create_tfrecords.py "
                 "--contiguous_ids); COCO results written by inference carry the source's "
                 "ids through this mapping.",
        "source": source,
        "category_ids": {str(k): v for k, v in sorted(category_ids.items())},
    }, indent=2, ensure_ascii=False) + "\n"


def parse_category_ids(text: str, source: str) -> dict[int, int | str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise LabelMapError(f"{source}: not JSON ({err.msg} at line {err.lineno})") from None
    mapping = data.get("category_ids") if isinstance(data, dict) else None
    if not isinstance(mapping, dict):
        raise LabelMapError(f"{source}: needs an object 'category_ids' (label-map id -> "
                            "category id)")
    result: dict[int, int | str] = {}
    for key, value in mapping.items():
        if not key.isdigit() or int(key) < 1:
            raise LabelMapError(f"{source}: {key!r} is not a label-map id (1, 2, ...)")
        if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
            raise LabelMapError(f"{source}: category id of label {key} is {value!r}, not an "
                                "id")
        result[int(key)] = value
    return result


def read_category_ids(label_map_path: str | Path) -> dict[int, int | str] | None:
    """The category ids kept beside the label map at `label_map_path`; None when the label
    map's ids are the source's own (no category_ids.json beside it)."""
    if is_remote(label_map_path):
        import tensorflow as tf

        path = f"{str(label_map_path).rsplit('/', 1)[0]}/{CATEGORY_IDS_NAME}"
        if not tf.io.gfile.exists(path):
            return None
        with tf.io.gfile.GFile(path, "r") as f:
            return parse_category_ids(f.read(), path)
    path = category_ids_path(label_map_path)
    if not path.is_file():
        return None
    return parse_category_ids(path.read_text(encoding="utf-8"), str(path))


def copy_category_ids(label_map_path: str | Path, directory: str | Path) -> Path | None:
    """Copies the category_ids.json beside `label_map_path` into `directory` (an export
    keeps it beside its label_map.pbtxt copy); None when there is none."""
    if is_remote(label_map_path) or not category_ids_path(label_map_path).is_file():
        return None
    target = Path(directory) / CATEGORY_IDS_NAME
    shutil.copyfile(category_ids_path(label_map_path), target)
    return target
