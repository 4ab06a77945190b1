"""Open Images class names: the class descriptions CSV (MID -> display name) and the
--classes entries a user writes (display names in any case, or MIDs)."""
from __future__ import annotations

import csv
import difflib
from pathlib import Path

from data_prep.annotations import AnnotationFileError
from records.class_hierarchy import LAYER1, Hierarchy


def open_csv_error(path: Path, what: str, err: Exception, line: int) -> AnnotationFileError:
    if isinstance(err, FileNotFoundError):
        return AnnotationFileError(f"{path}: {what} does not exist")
    if isinstance(err, UnicodeDecodeError):
        return AnnotationFileError(f"{path}: not {what} (not UTF-8 text near line {line})")
    return AnnotationFileError(f"{path}: not {what} (line {line}: {err})")


def read_class_descriptions(path: str | Path) -> dict[str, str]:
    """MID -> display name, in file order. Names may be quoted and hold commas."""
    path, descriptions, line = Path(path), {}, 0
    what = "an Open Images class descriptions CSV"
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            for row in reader:
                line = reader.line_num
                if not row or (line == 1 and row[0].strip().lower() == "labelname"):
                    continue  # blank line, or the header of the V6+ files
                if len(row) != 2 or not row[0].strip():
                    raise AnnotationFileError(f"{path}: line {line}: expected 'MID,display "
                                              f"name', got {','.join(row)[:80]!r}")
                mid, name = row[0].strip(), row[1]
                if descriptions.get(mid, name) != name:
                    raise AnnotationFileError(f"{path}: line {line}: {mid} is described twice "
                                              f"({descriptions[mid]!r} and {name!r})")
                descriptions[mid] = name
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise open_csv_error(path, what, err, line + 1) from None
    if not descriptions:
        raise AnnotationFileError(f"{path}: not {what}: no classes in it")
    return descriptions


def resolve_classes(requested: list[str], descriptions: dict[str, str], source: str,
                    hierarchy: Hierarchy | None = None, group: str | None = None) -> list[str]:
    """--classes entries (display names in any case, or MIDs) -> MIDs; one error for all.

    A display name shared by several MIDs (the 20k-class file has a dozen) resolves to the
    one in the hierarchy, if exactly one is. With a group, each class must belong to it.
    """
    by_name: dict[str, list[str]] = {}
    for mid, name in descriptions.items():
        by_name.setdefault(name.casefold(), []).append(mid)
    resolved: list[str] = []
    errors = []
    for text in requested:
        mids = [text] if text in descriptions else by_name.get(text.casefold(), [])
        if len(mids) > 1 and hierarchy is not None:
            mids = [m for m in mids if m in hierarchy] or mids
        if not mids:
            errors.append(f"{text!r} is not a class of {source}"
                          f"{_close_matches(text, by_name, descriptions)}")
        elif len(mids) > 1:
            errors.append(f"{text!r} names {len(mids)} classes ({', '.join(mids)}); give the MID")
        elif group is not None and mids[0] not in hierarchy:
            errors.append(f"{text!r} ({mids[0]}) is not in the hierarchy {hierarchy.source}")
        elif group is not None and not hierarchy.in_group(mids[0], group):
            tops = ", ".join(f"{descriptions.get(t, t)!r}" for t in hierarchy.top_level(mids[0]))
            errors.append(f"{text!r} ({mids[0]}) is not a {group} class (" + (
                f"depth {hierarchy.depth(mids[0])}; layer0 has the depth-0 classes, here {tops}"
                if group != LAYER1 else "depth 0 only; layer1 has the deeper classes") + ")")
        elif mids[0] not in resolved:
            resolved.append(mids[0])
    if errors:
        raise AnnotationFileError("--classes: " + "; ".join(errors))
    return resolved


def _close_matches(text: str, by_name: dict[str, list[str]], descriptions: dict[str, str]
                   ) -> str:
    matches = difflib.get_close_matches(text.casefold(), list(by_name), n=5, cutoff=0.6)
    shown = [repr(descriptions[by_name[m][0]]) for m in matches]
    return f" (close matches: {', '.join(shown)})" if shown else ""
