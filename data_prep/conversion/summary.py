"""What a conversion wrote and skipped, printed at the end and kept as NAME.summary.json."""
from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from data_prep.annotations import Problem

if TYPE_CHECKING:
    from data_prep.conversion.image_record import ImageResult

EXAMPLES_PER_REASON = 5


@dataclasses.dataclass
class SplitSummary:
    split: str
    format: str
    source: str
    class_names: list[str]
    images: int = 0
    instances: int = 0
    crowd_instances: int = 0
    images_without_instances: int = 0
    instances_per_class: Counter = dataclasses.field(default_factory=Counter)
    images_per_class: Counter = dataclasses.field(default_factory=Counter)
    skipped_images: Counter = dataclasses.field(default_factory=Counter)
    skipped_annotations: Counter = dataclasses.field(default_factory=Counter)
    warnings: Counter = dataclasses.field(default_factory=Counter)
    examples: dict = dataclasses.field(default_factory=lambda: defaultdict(list))
    shards: list[str] = dataclasses.field(default_factory=list)
    removed_stale_shards: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    notes: dict = dataclasses.field(default_factory=dict)  # e.g. balancing counts

    def add_problems(self, problems: Iterable[Problem]) -> None:
        """Counts problems: errors as skipped items (by scope), the rest as warnings."""
        for problem in problems:
            if not problem.is_error:
                self.warnings[problem.reason] += 1
            elif problem.scope == "image":
                self.skipped_images[problem.reason] += 1
            else:
                self.skipped_annotations[problem.reason] += 1
            if len(self.examples[problem.reason]) < EXAMPLES_PER_REASON:
                self.examples[problem.reason].append(str(problem))

    def add_image_result(self, result: "ImageResult") -> None:
        self.add_problems(result.problems)
        if result.dropped_reason:
            self.skipped_images[result.dropped_reason] += 1
        if result.serialized is None:
            return
        self.images += 1
        n = sum(result.class_counts.values())
        self.instances += n
        self.crowd_instances += result.num_crowd
        self.images_without_instances += n == 0
        self.instances_per_class.update(result.class_counts)
        self.images_per_class.update(result.class_counts.keys())

    def to_dict(self) -> dict:
        return {
            "split": self.split,
            "format": self.format,
            "source": self.source,
            "images": self.images,
            "instances": self.instances,
            "crowd_instances": self.crowd_instances,
            "images_without_instances": self.images_without_instances,
            "instances_per_class": {n: self.instances_per_class[n] for n in self.class_names},
            "images_per_class": {n: self.images_per_class[n] for n in self.class_names},
            "skipped": {"images": dict(sorted(self.skipped_images.items())),
                        "annotations": dict(sorted(self.skipped_annotations.items()))},
            "warnings": dict(sorted(self.warnings.items())),
            "examples": {k: v for k, v in sorted(self.examples.items())},
            "shards": [Path(s).name for s in self.shards],
            "removed_stale_shards": [Path(s).name for s in self.removed_stale_shards],
            **self.notes,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images / self.seconds, 1) if self.seconds else None,
        }

    def format_text(self) -> str:
        """A short human-readable report for the terminal."""
        d = self.to_dict()
        lines = [f"split '{self.split}': {self.images} images, {self.instances} instances "
                 f"({self.crowd_instances} crowd) in {len(self.shards)} shard(s), "
                 f"{d['seconds']} s ({d['images_per_second']} images/s)"]
        width = max([len(n) for n in self.class_names] + [5])
        lines.append(f"  {'class':<{width}}  instances  images")
        for name in self.class_names:
            lines.append(f"  {name:<{width}}  {self.instances_per_class[name]:>9}  "
                         f"{self.images_per_class[name]:>6}")
        for title, counter in (("skipped images", self.skipped_images),
                               ("skipped annotations", self.skipped_annotations),
                               ("warnings", self.warnings)):
            if counter:
                items = ", ".join(f"{k}: {v}" for k, v in sorted(counter.items()))
                lines.append(f"  {title}: {items}")
        for key, value in self.notes.items():
            lines.append(f"  {key.replace('_', ' ')}: {value}")
        if self.removed_stale_shards:
            lines.append(f"  removed {len(self.removed_stale_shards)} shard(s) of an earlier "
                         "run with another shard count")
        return "\n".join(lines)
