"""TensorFlow Datasets metadata for a directory of our records, written without TensorFlow.

With it, `tfds.builder_from_directory(OUTPUT_DIR).as_dataset(split="train")` reads the shards
as they are. TFDS needs three kinds of files, all JSON or text, so they are written here
directly: importing TensorFlow (about 5.6 s) just to describe the files would cost a small
conversion most of its wall time.

  dataset_info.json   name, version and, per split, the shard lengths and the file-name
                      template "{SPLIT}-{SHARD_X_OF_Y}.{FILEFORMAT}" (train-00000-of-00008.tfrecord)
  features.json       the FeatureConnector tree (tfds `FeatureConnector.to_proto()` as JSON)
  image.object.class.label.labels.txt   the ClassLabel names, one a line

Design:
* Only stock tfds features are named, so any tfds installation loads the directory (Colab,
  another repository) without this project on sys.path; a custom connector would be imported
  by its module path on every load.
* The top-level features are keyed by the Object Detection API's own keys
  ("image/encoded", "image/object/mask" ...): tfds serializes a top-level key unchanged, so the
  records stay exactly in the OD API format that Model Garden's TfExampleDecoder reads. A
  nested {"image": {"encoded": ...}} would serialize the same way but hide the image from
  `tfds.visualization.show_examples`, which only looks at top-level Image features.
* Hence boxes arrive as four [N] columns and masks as [N, H, W, 1] uint8 (stock Image features
  have a channel axis); `tf.stack([ymin, xmin, ymax, xmax], -1)` and `masks[..., 0]` give
  the [N, 4] / [N, H, W] views (see the README).
* Label ids are 1-based with 0 the background, and label maps may skip ids, so the ClassLabel
  has max_id + 1 names: index 0 is "background" and skipped ids get "unused_<id>" names
  (unique: tfds refuses duplicate names). `names[label]` is then the label map's name.
* Every split in the directory is described, found by scanning for NAME-?????-of-?????.tfrecord
  shard sets, because splits are often converted in separate runs.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import struct
import sys
import warnings
from collections import defaultdict
from pathlib import Path

from core.atomic_io import write_text_atomic
from core.cli import run_main
from records import keys
from records.label_map import LabelMap, read_label_map
from records.tfrecord_io import SHARD_PATTERN, CorruptRecordError

DATASET_INFO_FILE = "dataset_info.json"
FEATURES_FILE = "features.json"
LABEL_MAP_FILE = "label_map.pbtxt"
FILEPATH_TEMPLATE = "{SPLIT}-{SHARD_X_OF_Y}.{FILEFORMAT}"  # tfds naming.ShardedFileTemplate
VERSION = "1.0.0"
BACKGROUND_NAME = "background"
# tfds split names as `as_dataset(split=...)` parses them (tfds core/splits.py _SUB_SPEC_RE).
_TFDS_SPLIT_NAME = re.compile(r"^[\w-]+$")
_TFDS = "tensorflow_datasets.core.features."
_LENGTH = struct.Struct("<Q")


def labels_file_name(feature_key: str) -> str:
    """Where tfds looks for a top-level ClassLabel's names (feature.py
    convert_feature_name_to_filename: "/" becomes ".")."""
    return feature_key.replace("/", ".") + ".labels.txt"


LABELS_FILE = labels_file_name(keys.OBJECT_CLASS_LABEL)
METADATA_FILES = (DATASET_INFO_FILE, FEATURES_FILE, LABELS_FILE)


@dataclasses.dataclass
class SplitShards:
    """One split's complete shard set as found on disk."""

    name: str
    shard_lengths: list[int]
    num_bytes: int

    @property
    def num_examples(self) -> int:
        return sum(self.shard_lengths)


@dataclasses.dataclass
class TfdsMetadata:
    """What `write_tfds_metadata` wrote, and the shard sets it had to leave out."""

    paths: list[Path]
    splits: list[SplitShards]
    skipped: list[str] = dataclasses.field(default_factory=list)


# --- features.json: tfds FeatureConnector protos as JSON (proto/feature.proto) -------------

def _shape(*dims: int) -> dict:
    return {"dimensions": [str(d) for d in dims]} if dims else {}


def _tensor(dtype: str, *dims: int) -> dict:
    return {"pythonClassName": _TFDS + "tensor_feature.Tensor",
            "tensor": {"shape": _shape(*dims), "dtype": dtype, "encoding": "none"}}


def _text() -> dict:
    return {"pythonClassName": _TFDS + "text_feature.Text", "text": {}}


def _image(channels: int, encoding_format: str | None = None) -> dict:
    content = {"shape": _shape(-1, -1, channels), "dtype": "uint8"}
    if encoding_format:
        content["encodingFormat"] = encoding_format
    return {"pythonClassName": _TFDS + "image_feature.Image", "image": content}


def _sequence(feature: dict) -> dict:
    return {"pythonClassName": _TFDS + "sequence_feature.Sequence",
            "sequence": {"feature": feature, "length": "-1"}}


def _class_label(num_classes: int) -> dict:
    return {"pythonClassName": _TFDS + "class_label_feature.ClassLabel",
            "classLabel": {"numClasses": str(num_classes)}}


def features_json(num_classes: int) -> dict:
    """The FeaturesDict describing one record of the contract, keyed by its OD API keys.

    Images keep their own encoding (JPEG or PNG, so no encoding format is pinned) and decode
    to RGB; masks are PNG and decode to [H, W, 1] with values 0/1. Optional per-instance
    keys (difficult, group_of) parse as empty arrays in records that do not carry them.
    """
    features = {
        keys.IMAGE_ENCODED: _image(3),
        keys.IMAGE_FORMAT: _text(),
        keys.IMAGE_HEIGHT: _tensor("int64"),
        keys.IMAGE_WIDTH: _tensor("int64"),
        keys.IMAGE_FILENAME: _text(),
        keys.IMAGE_SOURCE_ID: _text(),
        keys.IMAGE_KEY_SHA256: _text(),
        **{key: _tensor("float32", -1) for key in keys.BBOX_KEYS},
        keys.OBJECT_CLASS_LABEL: _sequence(_class_label(num_classes)),
        keys.OBJECT_CLASS_TEXT: _sequence(_text()),
        keys.OBJECT_AREA: _tensor("float32", -1),
        keys.OBJECT_IS_CROWD: _tensor("int64", -1),
        keys.OBJECT_DIFFICULT: _tensor("int64", -1),
        keys.OBJECT_GROUP_OF: _tensor("int64", -1),
        keys.OBJECT_MASK: _sequence(_image(1, "png")),
    }
    return {"pythonClassName": _TFDS + "features_dict.FeaturesDict",
            "featuresDict": {"features": features}}


def class_label_names(label_map: LabelMap) -> list[str]:
    """ClassLabel names indexed by label id: background at 0, placeholders in id gaps."""
    by_id = {item.id: item.name for item in label_map}
    taken = set(by_id.values())

    def free(name: str) -> str:
        while name in taken:
            name = "_" + name
        taken.add(name)
        return name

    names = [free(BACKGROUND_NAME)]
    for label_id in range(1, label_map.max_id + 1):
        names.append(by_id[label_id] if label_id in by_id else free(f"unused_{label_id}"))
    for name in names:  # tfds strips every line of the labels file and drops empty ones
        if name != name.strip() or "\n" in name or "\r" in name:
            raise ValueError(f"class name {name!r} cannot be written to a TFDS labels file "
                             "(leading/trailing spaces or a line break)")
    return names


# --- dataset_info.json: the splits found on disk ------------------------------------------

def count_records_fast(path: str | Path) -> int:
    """Counts the records of a TFRecord file by hopping over lengths (no CRC check: the
    shards were just written and checked by the converter; a truncated one still fails)."""
    count = 0
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        offset = 0
        while offset < size:
            header = f.read(12)
            if len(header) < 12:
                raise CorruptRecordError(f"{path}: record {count} at byte {offset} is truncated")
            (length,) = _LENGTH.unpack(header[:8])
            offset += 12 + length + 4
            if offset > size:
                raise CorruptRecordError(f"{path}: record {count} is truncated")
            f.seek(offset)
            count += 1
    return count


def find_splits(directory: str | Path, exclude: frozenset[str] = frozenset(),
                ignore: frozenset[Path] = frozenset(), known: dict | None = None
                ) -> tuple[list[SplitShards], list[str]]:
    """Complete NAME-?????-of-?????.tfrecord shard sets, and why others were left out.

    A split with shard sets of two sizes (an interrupted rewrite) is described by its
    newest complete set, which is the one the converter committed last. Splits named in
    `exclude` and files in `ignore` are not looked at; a split that `known` (name ->
    SplitShards, from the metadata already there) describes with the same shard count and
    bytes is taken from it without reading a record; one that cannot be counted (a
    truncated file) is left out, with the reason.
    """
    directory = Path(directory)
    shard_sets: dict[str, dict[int, dict[int, Path]]] = defaultdict(lambda: defaultdict(dict))
    for path in directory.iterdir():
        match = SHARD_PATTERN.match(path.name)
        if match and path.is_file() and match["name"] not in exclude and path not in ignore:
            shard_sets[match["name"]][int(match["count"])][int(match["index"])] = path
    splits, skipped = [], []
    for name in sorted(shard_sets):
        if not _TFDS_SPLIT_NAME.match(name):
            skipped.append(f"{name}: tfds split names may hold only letters, digits, _ and -")
            continue
        complete = {count: shards for count, shards in shard_sets[name].items()
                    if sorted(shards) == list(range(count))}
        for count in sorted(set(shard_sets[name]) - set(complete)):
            skipped.append(f"{name}: shard set of {count} is incomplete "
                           f"({len(shard_sets[name][count])} file(s))")
        if not complete:
            continue
        count = max(complete, key=lambda c: max(p.stat().st_mtime for p in complete[c].values()))
        paths = [complete[count][i] for i in range(count)]
        num_bytes = sum(p.stat().st_size for p in paths)
        previous = (known or {}).get(name)
        if previous is not None and (len(previous.shard_lengths), previous.num_bytes) == (
                count, num_bytes):
            splits.append(previous)
            continue
        try:
            lengths = [count_records_fast(p) for p in paths]
        except CorruptRecordError as err:
            skipped.append(f"{name}: {err}")
            continue
        splits.append(SplitShards(name, lengths, num_bytes))
    return splits, skipped


def described_splits(directory: str | Path) -> dict[str, SplitShards]:
    """The splits an existing dataset_info.json describes ({} when there is none or it is
    not ours to read)."""
    try:
        info = json.loads((Path(directory) / DATASET_INFO_FILE).read_text(encoding="utf-8"))
        return {s["name"]: SplitShards(s["name"], [int(n) for n in s["shardLengths"]],
                                       int(s["numBytes"])) for s in info["splits"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def metadata_texts(output_dir: str | Path, label_map: LabelMap, planned: list[SplitShards],
                   ignore: frozenset[Path] = frozenset(), dataset_name: str | None = None
                   ) -> tuple[dict[str, str], list[str]]:
    """The metadata files' contents (file name -> text) for the splits `planned` (being
    written: their counts are known) and every other split on disk, before anything is
    committed; and the shard sets left out, with why."""
    others, skipped = find_splits(output_dir, frozenset(s.name for s in planned), ignore,
                                  described_splits(output_dir))
    for split in planned:
        if not _TFDS_SPLIT_NAME.match(split.name):
            skipped.append(f"{split.name}: tfds split names may hold only letters, digits, "
                           "_ and -")
    splits = sorted([s for s in planned if _TFDS_SPLIT_NAME.match(s.name)] + others,
                    key=lambda s: s.name)
    names = class_label_names(label_map)
    info = dataset_info_json(dataset_name or dataset_name_for(output_dir), splits, label_map)
    return {LABELS_FILE: "\n".join(names) + "\n",
            FEATURES_FILE: _json_text(features_json(len(names))),
            DATASET_INFO_FILE: _json_text(info)}, skipped


def _json_text(value: dict) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def dataset_info_json(dataset_name: str, splits: list[SplitShards], label_map: LabelMap) -> dict:
    return {
        "name": dataset_name,
        "version": VERSION,
        "description": "Instance segmentation records in the TensorFlow Object Detection API "
                       f"format (tf.train.Example keys as in records/keys.py); {len(label_map)} "
                       "classes with 1-based label-map ids (0 is the background).",
        "fileFormat": "tfrecord",
        "splits": [{"name": split.name, "numBytes": str(split.num_bytes),
                    "shardLengths": [str(n) for n in split.shard_lengths],
                    "filepathTemplate": FILEPATH_TEMPLATE} for split in splits],
    }


def dataset_name_for(directory: str | Path) -> str:
    """A valid tfds dataset name ([a-zA-Z][a-zA-Z0-9_]*) from the directory name."""
    name = re.sub(r"\W+", "_", Path(directory).resolve().name.lower(), flags=re.ASCII)
    name = name.strip("_")
    return name if name[:1].isalpha() else f"records_{name}".rstrip("_")


def write_tfds_metadata(output_dir: str | Path, label_map: LabelMap | None = None,
                        dataset_name: str | None = None) -> TfdsMetadata:
    """Describes every split in `output_dir` for `tfds.builder_from_directory`.

    `label_map` defaults to the directory's label_map.pbtxt. Files are written atomically,
    dataset_info.json last, so a reader never sees features that do not match it. Shard
    sets tfds cannot address are left out with a warning.
    """
    output_dir = Path(output_dir)
    if label_map is None:
        label_map = read_label_map(output_dir / LABEL_MAP_FILE)
    texts, skipped = metadata_texts(output_dir, label_map, [], dataset_name=dataset_name)
    for reason in skipped:
        warnings.warn(f"TFDS metadata leaves out {reason}", stacklevel=2)
    paths = [write_text_atomic(output_dir / name, texts[name])
             for name in (LABELS_FILE, FEATURES_FILE, DATASET_INFO_FILE)]
    splits, _ = find_splits(output_dir)
    return TfdsMetadata(paths, splits, skipped)


def remove_tfds_metadata(output_dir: str | Path) -> list[Path]:
    """Deletes metadata an earlier run wrote (e.g. before a --no_tfds_metadata run changed
    the shards, which would leave it describing files that are gone)."""
    removed = []
    for name in METADATA_FILES:
        path = Path(output_dir) / name
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed


def main(argv: list[str] | None = None) -> int:
    """`python -m records.tfds_metadata DIR`: (re)writes the metadata of existing records."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("output_dir", help="directory of NAME-?????-of-?????.tfrecord shards")
    parser.add_argument("--label_map", help="default: OUTPUT_DIR/label_map.pbtxt")
    parser.add_argument("--dataset_name", help="default: from the directory name")
    args = parser.parse_args(argv)
    label_map = read_label_map(args.label_map) if args.label_map else None
    result = write_tfds_metadata(args.output_dir, label_map, args.dataset_name)
    for split in result.splits:
        print(f"{split.name}: {split.num_examples} examples in {len(split.shard_lengths)} shards")
    print(f"wrote {', '.join(str(p) for p in result.paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
