"""Pictures of a data set from its records, for `python -m records.inspect --plots DIR`:

  classes.png              instances and images per class (label-map order), the imbalance
                           class balancing and repeat-factor sampling address
  instances_per_image.png  how many instances the images hold (crowded images need
                           first_stage_max_proposals / max detections to match)
  object_sizes.png         the square root of each instance's area with COCO's small /
                           medium / large limits (32, 96 px), and box width against height

Drawn with matplotlib's Agg canvas (no display needed, no TensorFlow); each file is
written atomically.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np

from core.atomic_io import write_bytes_atomic

SMALL, LARGE = 32, 96  # COCO's limits on sqrt(area), in pixels
MAX_POINTS = 20000  # more boxes: a 2-D histogram instead of points


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return write_bytes_atomic(path, buffer.getvalue())


def _label(row: dict) -> str:
    name = row["display_name"] or row["name"] or (f"id {row['id']}" if row["id"] else "?")
    return name if row["in_label_map"] else f"{name} (not in label map)"


def class_histogram(classes: Sequence[dict], path: Path) -> Path:
    """Horizontal bars, instances and images per class; the first class on top."""
    labels = [_label(row) for row in classes]
    instances = np.array([row["instances"] for row in classes], np.float64)
    images = np.array([row["images"] for row in classes], np.float64)
    figure = _figure(8, 1.2 + 0.3 * max(len(classes), 1))
    axes = figure.add_subplot(1, 1, 1)
    positions = np.arange(len(classes))[::-1]
    axes.barh(positions + 0.2, instances, height=0.4, label="instances")
    axes.barh(positions - 0.2, images, height=0.4, label="images")
    for y, count in zip(positions, instances):
        axes.text(count, y + 0.2, f" {int(count)}", va="center", fontsize=7)
    axes.set_yticks(positions)
    axes.set_yticklabels(labels, fontsize=8)
    if len(instances) and instances.max() > 100 * max(instances[instances > 0].min(), 1):
        axes.set_xscale("symlog")  # a 100x imbalance: keep the rare classes visible
    axes.set_xlabel("count")
    axes.set_title(f"{int(instances.sum())} instances of {len(classes)} classes")
    axes.legend(loc="lower right")
    axes.grid(axis="x", alpha=0.3)
    return _save(figure, path)


def instances_per_image(counts: Sequence[int], path: Path) -> Path:
    """Images per number of instances."""
    counts = np.asarray(counts, np.int64)
    figure = _figure(7, 4)
    axes = figure.add_subplot(1, 1, 1)
    if counts.size:
        values, frequency = np.unique(counts, return_counts=True)
        axes.bar(values, frequency, width=0.8 if values.max() - values.min() < 60 else 1.0)
        axes.set_title(f"{counts.size} images: {counts.min()} to {counts.max()} instances, "
                       f"median {np.median(counts):g}")
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("instances in the image")
    axes.set_ylabel("images")
    axes.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def object_sizes(widths: Sequence[float], heights: Sequence[float], areas: Sequence[float],
                 path: Path) -> Path:
    """sqrt(area) histogram with the COCO size limits, and box width vs height (pixels)."""
    widths, heights = np.asarray(widths, np.float64), np.asarray(heights, np.float64)
    roots = np.sqrt(np.maximum(np.asarray(areas, np.float64), 0))
    figure = _figure(12, 4.5)
    left = figure.add_subplot(1, 2, 1)
    if roots.size:
        left.hist(roots, bins=min(60, max(10, roots.size // 5)), color="#4472c4")
        shares = [np.mean(roots < SMALL), np.mean((roots >= SMALL) & (roots < LARGE)),
                  np.mean(roots >= LARGE)]
        for limit in (SMALL, LARGE):
            left.axvline(limit, color="#c00000", linestyle="--", linewidth=1)
        left.set_title("small {:.0%}, medium {:.0%}, large {:.0%} (COCO's limits 32, 96)"
                       .format(*shares), fontsize=10)
        left.set_xlim(0, max(LARGE * 1.1, roots.max() * 1.02))
    left.set_xlabel("sqrt(instance area), pixels")
    left.set_ylabel("instances")
    right = figure.add_subplot(1, 2, 2)
    if widths.size > MAX_POINTS:
        right.hexbin(widths, heights, gridsize=50, bins="log", mincnt=1, cmap="Blues")
    elif widths.size:
        right.scatter(widths, heights, s=6, alpha=0.5)
    if widths.size:
        top = max(widths.max(), heights.max()) * 1.05
        right.plot([0, top], [0, top], color="gray", linewidth=0.8, linestyle=":")
        right.set_xlim(0, top)
        right.set_ylim(0, top)
    right.set_xlabel("box width, pixels")
    right.set_ylabel("box height, pixels")
    right.set_title(f"{widths.size} boxes (dotted: square)", fontsize=10)
    return _save(figure, path)


def write_dataset_plots(out_dir: Path, classes: Sequence[dict], per_image: Sequence[int],
                        widths: Sequence[float], heights: Sequence[float],
                        areas: Sequence[float]) -> list[Path]:
    """The three pictures into out_dir (created when missing)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [class_histogram(classes, out_dir / "classes.png"),
            instances_per_image(per_image, out_dir / "instances_per_image.png"),
            object_sizes(widths, heights, areas, out_dir / "object_sizes.png")]
