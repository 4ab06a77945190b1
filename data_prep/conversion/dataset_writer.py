"""Annotations -> every split's shards, label_map.pbtxt, summaries and TFDS metadata, all
committed together at the end (or nothing, when anything fails).

This is create_tfrecords.py's whole job once the annotations are read: choose the label map
(given, or derived and checked against one already in the output directory), plan the
splits (validation fraction, class balancing), convert each split with the local or the
Beam runner, then commit.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from core.directory_commit import DirectoryCommit, clear_leftovers, prepare_directory
from core.errors import UsageError
from data_prep.annotations import AnnotationSet, Problem
from data_prep.conversion import splits
from data_prep.conversion.image_record import ConversionError, ConvertOptions
from data_prep.conversion.summary import SplitSummary
from records.label_map import (
    CATEGORY_IDS_NAME,
    LabelMap,
    LabelMapError,
    category_ids_path,
    format_category_ids,
    format_label_map,
    read_category_ids,
    read_label_map,
)
from records.tfds_metadata import METADATA_FILES, SplitShards, metadata_texts

log = logging.getLogger(__name__)
LABEL_MAP_NAME = "label_map.pbtxt"
RUNNERS = ("local", "beam")


@dataclasses.dataclass(frozen=True)
class SplitPlan:
    """Which splits a run writes and how the main split is balanced."""

    split: str = "train"
    val_fraction: float = 0.0  # also write a validation split of this fraction
    val_split: str = "val"
    seed: int = 0
    max_images_per_class: int = 0  # cap frequent classes (0: no cap)
    min_images_per_class: int = 0  # repeat images of rarer classes (0: no repeats)


@dataclasses.dataclass(frozen=True)
class ResolvedLabelMap:
    """The label map a run writes, and the source's category ids when it renumbers them
    (written beside it as category_ids.json; None: its ids are the source's own)."""

    label_map: LabelMap
    category_ids: dict[int, int | str] | None = None


def resolve_label_map(annotations: AnnotationSet, output_dir: Path,
                      label_map_path: str | None) -> ResolvedLabelMap:
    """The label map to write with: given (with the category_ids.json beside it), or derived
    from the data and checked against one already in the output directory (so splits
    converted separately share ids)."""
    if label_map_path:
        return ResolvedLabelMap(read_label_map(label_map_path),
                                read_category_ids(label_map_path))
    derived = LabelMap.from_names(annotations.class_names, annotations.display_names,
                                  annotations.label_ids)
    if annotations.class_relations:
        derived = with_relations(derived, annotations.class_relations)
    category_ids = (dict(zip((item.id for item in derived), annotations.category_ids))
                    if annotations.category_ids else None)
    existing_path = output_dir / LABEL_MAP_NAME
    if existing_path.exists():
        existing = read_label_map(existing_path)
        if existing != derived:
            raise LabelMapError(
                f"{existing_path} already exists with other classes or ids than "
                f"{annotations.source} gives ({_shown(existing)} vs {_shown(derived)}). Pass "
                f"--label_map {existing_path} to use its ids, or remove it.")
        existing_ids = read_category_ids(existing_path)
        if existing_ids != category_ids:
            raise LabelMapError(
                f"{existing_path} already exists with other source category ids "
                f"({category_ids_path(existing_path).name}: {existing_ids}) than "
                f"{annotations.source} gives ({category_ids}). Pass --label_map "
                f"{existing_path} to use its ids, or remove it.")
    return ResolvedLabelMap(derived, category_ids)


def _shown(label_map: LabelMap) -> str:
    """Names, with ids when they are not 1..K."""
    if [item.id for item in label_map] == list(range(1, len(label_map) + 1)):
        return str(label_map.names)
    return str({item.id: item.name for item in label_map})


def with_relations(label_map: LabelMap, relations: dict) -> LabelMap:
    """The label map with ancestor and descendant ids filled in from class names."""
    ids = {item.name: item.id for item in label_map}

    def to_ids(names) -> tuple[int, ...]:
        return tuple(sorted(ids[n] for n in names if n in ids))

    items = []
    for item in label_map:
        ancestors, descendants = relations.get(item.name, ((), ()))
        items.append(dataclasses.replace(item, ancestor_ids=to_ids(ancestors),
                                         descendant_ids=to_ids(descendants)))
    return LabelMap(items, source=label_map.source)


def unknown_class_problems(annotations: AnnotationSet, label_map: LabelMap) -> list[Problem]:
    """Drops objects whose class the label map lacks, returning one error for each. A class
    that is an item's display name (an OD API label map naming items by MID, given with
    --label_map) is that item: it is written with the item's name."""
    problems = []
    for image in annotations.images:
        kept = []
        for obj in image.objects:
            try:
                item = label_map.item_for_text(obj.class_name)
            except LabelMapError as err:
                item, message = None, str(err)
            else:
                message = f"class {obj.class_name!r} is not in the label map {label_map.source}"
            if item is not None:
                obj.class_name = item.name
                kept.append(obj)
            else:
                problems.append(Problem("unknown_class", message, annotations.source,
                                        f"annotation {obj.annotation_id} ({image.file_name!r})"))
        image.objects = kept
    return problems


def plan_splits(images: list, plan: SplitPlan) -> tuple[dict, dict]:
    """Split name -> images to write, and split name -> balancing notes for its summary."""
    notes: dict[str, dict] = {plan.split: {}}
    if plan.val_fraction:
        if plan.val_split == plan.split:
            raise UsageError(f"--val_split must differ from --split ({plan.split!r})")
        train, val = splits.split_train_val(images, plan.val_fraction, plan.seed)
        planned = {plan.split: train, plan.val_split: val}
        notes[plan.val_split] = {}
    else:
        planned = {plan.split: list(images)}
    if plan.max_images_per_class:
        planned[plan.split], dropped = splits.cap_images_per_class(
            planned[plan.split], plan.max_images_per_class, plan.seed)
        notes[plan.split]["images_dropped_by_max_images_per_class"] = dropped
    if plan.min_images_per_class:
        planned[plan.split], repeated = splits.repeat_rare_classes(
            planned[plan.split], plan.min_images_per_class)
        notes[plan.split]["images_repeated_by_min_images_per_class"] = repeated
    return planned, notes


def _split_writer(runner: str):
    if runner == "beam":
        try:
            from data_prep.conversion.beam_runner import write_split as write_split_beam
        except ModuleNotFoundError as err:  # the message says where Beam lives
            raise UsageError(str(err)) from None
        return write_split_beam
    if runner != "local":
        raise UsageError(f"unknown runner {runner!r}; choose from {', '.join(RUNNERS)}")
    from data_prep.conversion.local_runner import write_split

    return write_split


def write_dataset(annotations: AnnotationSet, output_dir: str | Path, format_name: str,
                  plan: SplitPlan = SplitPlan(), num_shards: int = 1, workers: int = 1,
                  label_map_path: str | None = None,
                  options: ConvertOptions = ConvertOptions(), runner: str = "local",
                  beam_options: str = "", tfds_metadata: bool = True, progress: bool = True
                  ) -> list[SplitSummary]:
    """Converts every planned split, then commits all of it together: on any error the
    output directory is left exactly as it was (core/directory_commit.py)."""
    output_dir = Path(output_dir)
    if num_shards < 1:
        raise UsageError(f"--num_shards must be at least 1, got {num_shards}")
    resolved = resolve_label_map(annotations, output_dir, label_map_path)
    label_map = resolved.label_map
    problems = annotations.problems + unknown_class_problems(annotations, label_map)
    errors = [p for p in problems if p.is_error]
    if errors and not options.skip_errors:
        raise ConversionError(errors)
    planned, notes = plan_splits(annotations.images, plan)
    write = _split_writer(runner)
    extra = {"beam_options": beam_options} if runner == "beam" else {}
    created = not output_dir.exists()
    prepare_directory(output_dir)
    for path in clear_leftovers(output_dir):
        log.info("removed %s, left by a converter run that was killed", path.name)
    summaries, pending = [], []
    commit = DirectoryCommit(output_dir)
    try:
        for split, images in planned.items():
            summary = SplitSummary(split=split, format=format_name, source=annotations.source,
                                   class_names=label_map.names, notes=notes[split])
            if split == plan.split:  # reading problems are counted once, in the main split
                summary.add_problems(problems)
            pending.append(write(images, label_map, str(output_dir), split, num_shards,
                                 max(1 if extra else 0, workers), options, summary,
                                 progress=progress, **extra))
            summaries.append(summary)
        _stage_outputs(commit, output_dir, resolved, summaries, pending, tfds_metadata)
        _stage_category_ids(commit, output_dir, resolved, annotations.source)
        commit.commit()
        for writer in pending:
            writer.abort()  # deletes what is left of its temporaries (a Beam staging dir)
    except BaseException:
        commit.abort()
        for writer in pending:
            writer.abort()
        if created and output_dir.is_dir() and not any(output_dir.iterdir()):
            output_dir.rmdir()  # leave no empty directory behind either
        raise
    return summaries


def _stage_category_ids(commit: DirectoryCommit, output_dir: Path, resolved: ResolvedLabelMap,
                        source: str) -> None:
    """category_ids.json beside the label map when it renumbers the source's ids; an earlier
    run's is removed otherwise, since it would map these ids wrongly."""
    path = output_dir / CATEGORY_IDS_NAME
    if resolved.category_ids:
        commit.write_text(path, format_category_ids(resolved.category_ids, source))
    elif path.exists():
        log.info("removing %s: the label map's ids are the source's own", path)
        commit.remove(path)


def _stage_outputs(commit: DirectoryCommit, output_dir: Path, resolved: ResolvedLabelMap,
                   summaries: list[SplitSummary], writers: list, tfds_metadata: bool) -> None:
    """Adds every split's shards, its summary, the label map and the TFDS metadata (or the
    removal of an earlier run's) to `commit`; nothing is in place yet."""
    label_map = resolved.label_map
    planned, replaced = [], set()
    for summary, writer in zip(summaries, writers):
        writer.stage(commit)
        summary.shards = [str(p) for p in writer.paths]
        summary.removed_stale_shards = [str(p) for p in writer.removed_stale]
        commit.write_json(output_dir / f"{summary.split}.summary.json", summary.to_dict())
        planned.append(SplitShards(summary.split, writer.shard_lengths(),
                                   writer.staged_bytes()))
        replaced.update(writer.removed_stale)
    commit.write_text(output_dir / LABEL_MAP_NAME, format_label_map(label_map))
    if tfds_metadata:
        texts, skipped = metadata_texts(output_dir, label_map, planned, frozenset(replaced))
        for reason in skipped:
            log.warning("TFDS metadata leaves out %s", reason)
        for name, text in texts.items():
            commit.write_text(output_dir / name, text)
    else:  # an earlier run's metadata would describe other shards
        for name in METADATA_FILES:
            if (output_dir / name).exists():
                log.info("removing stale TFDS metadata %s", output_dir / name)
                commit.remove(output_dir / name)
