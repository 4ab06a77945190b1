"""The analysis pictures, drawn with matplotlib's Agg canvas (no display, no pyplot state,
so it runs on servers and inside other programs).

Each function draws one PNG and returns its path; the numbers come from the scorer's
COCOeval runs (models/evaluation/coco_metrics.py) and models/analysis' breakdowns.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from models.analysis.error_breakdown import AREAS, KINDS, ErrorBreakdown
from models.evaluation.coco_metrics import OVERALL, PrecisionRecall

DPI = 100
TYPE_NAMES = {"bbox": "boxes", "segm": "masks"}
# C75 .. FN, dark to light: the band above a curve is the error it forgives
KIND_COLORS = ("#1f4e79", "#2e75b6", "#9dc3e6", "#70ad47", "#ffc000", "#c55a11", "#d9d9d9")
MAX_LEGEND = 15


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, format="png", bbox_inches="tight")
    return path


def ap_per_class(names: Sequence[str], values: dict[str, dict[str, Sequence[float]]],
                 path: Path) -> Path:
    """Horizontal bars per class; values: {"AP@[.50:.95]": {"boxes": [...], ...}, ...}
    (-1: no ground truth, drawn as "n/a"). Classes sorted by the first series, worst on
    top, classes without ground truth at the bottom."""
    panels = list(values)
    first = np.asarray(next(iter(values[panels[0]].values())), np.float64)
    key = np.where(first < 0, np.inf, first)
    order = np.argsort(key, kind="stable")[::-1]  # drawn bottom-up: worst at the top
    height = 1.2 + 0.32 * len(names)
    figure = _figure(5 * len(panels), height)
    for p, panel in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), p + 1)
        series = values[panel]
        width = 0.8 / len(series)
        for s, (label, ap) in enumerate(series.items()):
            ap = np.asarray(ap, np.float64)[order]
            positions = np.arange(len(names)) + (s - (len(series) - 1) / 2) * width
            axes.barh(positions, np.where(ap < 0, 0, ap), height=width, label=label)
            for y, value in zip(positions, ap):
                axes.text(max(value, 0) + 0.01, y, "n/a" if value < 0 else f"{value:.2f}",
                          va="center", fontsize=7)
        axes.set_yticks(np.arange(len(names)))
        axes.set_yticklabels([names[i] for i in order] if p == 0 else [])
        axes.set_xlim(0, 1.1)
        axes.set_title(panel)
        axes.grid(axis="x", alpha=0.3)
        axes.legend(loc="lower right", fontsize=8)
    return _save(figure, path)


def pr_curves(curves: Sequence[PrecisionRecall], path: Path) -> Path:
    """One panel per IoU threshold: the overall curve bold, each class thin."""
    ious = sorted({c.iou for c in curves})
    figure = _figure(5.5 * len(ious), 5)
    for p, iou in enumerate(ious):
        axes = figure.add_subplot(1, len(ious), p + 1)
        chosen = [c for c in curves if c.iou == iou]
        classes = [c for c in chosen if c.name != OVERALL]
        for curve in classes:
            axes.plot(curve.recall, curve.precision, linewidth=1,
                      label=f"{curve.name} ({curve.average_precision:.2f})")
        for curve in (c for c in chosen if c.name == OVERALL):
            axes.plot(curve.recall, curve.precision, color="black", linewidth=2.5,
                      label=f"overall ({curve.average_precision:.2f})")
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1.02)
        axes.set_xlabel("recall")
        axes.set_ylabel("precision")
        axes.set_title(f"{TYPE_NAMES.get(chosen[0].iou_type, chosen[0].iou_type)}, "
                       f"IoU {iou:.2f} (AP in brackets)")
        axes.grid(alpha=0.3)
        if len(classes) <= MAX_LEGEND:
            axes.legend(loc="lower left", fontsize=8)
    return _save(figure, path)


def _breakdown_panel(axes, recall: np.ndarray, curves: np.ndarray, title: str) -> None:
    """curves [7, R]: filled bands between consecutive curves, AP of each in the legend."""
    below = np.zeros_like(recall)
    for t, kind in enumerate(KINDS):
        above = np.maximum(curves[t], below)
        axes.fill_between(recall, below, above, color=KIND_COLORS[t], linewidth=0,
                          label=f"[{curves[t].mean():.3f}] {kind}")
        below = above
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_title(title, fontsize=10)


def _legend_beside(axes, fontsize: int) -> None:
    """The legend right of the panel, so it hides no band; C75 on top as in the picture."""
    handles, labels = axes.get_legend_handles_labels()
    axes.legend(handles[::-1], labels[::-1], loc="center left", bbox_to_anchor=(1.01, 0.5),
                fontsize=fontsize, frameon=False)


def error_breakdown_overall(breakdown: ErrorBreakdown, path: Path) -> Path:
    """COCO's analyze() picture, overall, one panel per object size."""
    overall = breakdown.overall()
    figure = _figure(13, 9)
    for a, area in enumerate(AREAS):
        axes = figure.add_subplot(2, 2, a + 1)
        counted = int(breakdown.counted[:, a].sum())
        _breakdown_panel(axes, breakdown.recall, overall[:, :, a],
                         f"{area} objects (mean of {counted} classes)" if counted
                         else f"{area} objects: none in the ground truth")
        if counted:
            _legend_beside(axes, 9)
    figure.suptitle(f"COCO error breakdown, {TYPE_NAMES.get(breakdown.iou_type)}, overall")
    figure.subplots_adjust(wspace=0.55, hspace=0.3)
    return _save(figure, path)


def error_breakdown_per_class(breakdown: ErrorBreakdown, path: Path) -> Path:
    """The same, one small panel per class with ground truth (all sizes)."""
    classes = [k for k in range(len(breakdown.class_names)) if breakdown.counted[k, 0]]
    columns = min(5, max(1, int(np.ceil(np.sqrt(len(classes))))))
    rows = max(1, -(-len(classes) // columns))
    height = 3.4 * rows + 0.6
    figure = _figure(5.2 * columns, height)
    for n, k in enumerate(classes):
        axes = figure.add_subplot(rows, columns, n + 1)
        _breakdown_panel(axes, breakdown.recall, breakdown.curves[:, :, k, 0],
                         breakdown.class_names[k])
        _legend_beside(axes, 7)
    figure.suptitle(f"COCO error breakdown per class, {TYPE_NAMES.get(breakdown.iou_type)}, "
                    "all sizes", y=1 - 0.15 / height)
    figure.subplots_adjust(top=1 - 0.75 / height, wspace=0.75, hspace=0.45)
    return _save(figure, path)


def ap_by_size(values: dict[str, Sequence[float]], objects: Sequence[int], path: Path
               ) -> Path:
    """Grouped bars: AP@[.50:.95] of small, medium and large objects per IoU type
    (-1: no objects of that size)."""
    sizes = ("small", "medium", "large")
    limits = ("area < 32²", "32² - 96²", "area > 96²")
    figure = _figure(7, 4.5)
    axes = figure.add_subplot(1, 1, 1)
    width = 0.8 / max(len(values), 1)
    for s, (label, ap) in enumerate(values.items()):
        ap = np.asarray(ap, np.float64)
        positions = np.arange(len(sizes)) + (s - (len(values) - 1) / 2) * width
        axes.bar(positions, np.where(ap < 0, 0, ap), width=width, label=label)
        for x, value in zip(positions, ap):
            axes.text(x, max(value, 0) + 0.01, "n/a" if value < 0 else f"{value:.2f}",
                      ha="center", fontsize=8)
    axes.set_xticks(np.arange(len(sizes)))
    axes.set_xticklabels([f"{s}\n{lim}\n{n} objects" for s, lim, n in
                          zip(sizes, limits, objects)])
    axes.set_ylim(0, 1.1)
    axes.set_ylabel("AP@[.50:.95]")
    axes.set_title("AP by object size (pixels of the original image)")
    axes.legend()
    axes.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def confusion(matrix: np.ndarray, names: Sequence[str], title: str, path: Path) -> Path:
    """Counts with each row's share as the colour (rows: truth, columns: prediction)."""
    rows = list(names) + ["background"]
    columns = list(names) + ["missed"]
    size = 2.5 + 0.55 * len(rows)
    figure = _figure(size + 1, size)
    axes = figure.add_subplot(1, 1, 1)
    totals = np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    image = axes.imshow(matrix / totals, cmap="Blues", vmin=0, vmax=1)
    for (r, c), count in np.ndenumerate(matrix):
        if count:
            share = count / totals[r, 0]
            axes.text(c, r, str(count), ha="center", va="center", fontsize=8,
                      color="white" if share > 0.6 else "black")
    axes.set_xticks(np.arange(len(columns)))
    axes.set_xticklabels(columns, rotation=45, ha="right")
    axes.set_yticks(np.arange(len(rows)))
    axes.set_yticklabels(rows)
    axes.set_xlabel("prediction")
    axes.set_ylabel("ground truth")
    axes.set_title(title, fontsize=10)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the row")
    return _save(figure, path)
