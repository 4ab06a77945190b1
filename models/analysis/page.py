"""index.html of an analysis: one self-contained page (inline style, no scripts, images by
relative links) that opens from the output directory, a copied one or a zip of it."""
from __future__ import annotations

import html
from pathlib import Path

from models.analysis.error_breakdown import AREAS, KINDS
from models.evaluation.coco_metrics import metric_name

STYLE = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
img{max-width:100%;border:1px solid #ddd}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}th{background:#f0f0f0}
td:first-child,th:first-child{text-align:left}.note{color:#555;font-size:90%}"""
TYPE_NAMES = {"bbox": "Boxes", "segm": "Masks"}
ERROR_TEXT = {
    "C75": "precision at IoU .75: the COCO curve (its area is AP75)",
    "C50": "at IoU .50 (AP50); the band C50-C75 is what imprecise boxes cost",
    "Loc": "at IoU .10: localization errors forgiven, duplicates still wrong",
    "Sim": "also forgiven: detections on an object of a similar class (same supercategory)",
    "Oth": "also forgiven: detections on an object of any other class",
    "BG": "also forgiven: every remaining false positive (background, duplicates)",
    "FN": "the rest up to 1: recall never reached, i.e. missed objects",
}
STATS = (("AP", "AP@[.50:.95]"), ("AP50", "AP@.50"), ("AP75", "AP@.75"), ("APs", "AP small"),
         ("APm", "AP medium"), ("APl", "AP large"), ("ARmax100", "AR@100"))


def _e(value) -> str:
    return html.escape(str(value))


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _number(value: float) -> str:
    return "n/a" if value < 0 else f"{value:.3f}"


def _picture(pictures: dict[str, str], key: str, alt: str) -> str:
    return (f'<p><a href="{_e(pictures[key])}"><img src="{_e(pictures[key])}" '
            f'alt="{_e(alt)}"></a></p>') if key in pictures else ""


def write_page(path: Path, summary: dict, pictures: dict[str, str]) -> Path:
    """Writes the page; pictures maps a picture's key to its path relative to the page."""
    metrics, types = summary["metrics"], list(summary["errors"])
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Analysis</title>"
             f"<style>{STYLE}</style></head><body><h1>Where the model fails</h1>",
             f"<p>{_e(summary['source'])}: {summary['images']} images, "
             f"{summary['detections']} detections. Confusion matrices and worst images use "
             f"the detections scoring at least {summary['score_threshold']:g}; AP and the "
             "curves use all.</p>",
             _table(["metric"] + [TYPE_NAMES[t] for t in types],
                    [[label] + [_number(metrics[metric_name(t, stat)]) for t in types]
                     for stat, label in STATS]),
             "<h2>AP per class</h2>", _picture(pictures, "ap_per_class", "AP per class"),
             "<h2>Precision-recall curves</h2><p class='note'>COCOeval's interpolated "
             "precision at 101 recall points, all object sizes, 100 detections per image; "
             "the overall curve is the mean over the classes with ground truth.</p>"]
    for t in types:
        parts.append(_picture(pictures, f"pr_{t}", f"PR curves, {TYPE_NAMES[t]}"))
    parts.append("<h2>Error breakdown</h2><p>As the COCO API's <code>analyze()</code> "
                 "defines it: seven precision-recall curves, each forgiving one more kind of "
                 "error; the number in brackets is the area under the curve.</p>")
    parts.append(_table(["curve", "meaning"], [[k, ERROR_TEXT[k]] for k in KINDS]))
    for t in types:
        overall = summary["errors"][t]["overall"]
        parts += [f"<h3>{TYPE_NAMES[t]}</h3>",
                  _table(["size"] + list(KINDS),
                         [[area] + [f"{overall[area][k]:.3f}" for k in KINDS]
                          for area in AREAS if area in overall]),
                  _picture(pictures, f"errors_{t}", f"error breakdown, {TYPE_NAMES[t]}"),
                  _picture(pictures, f"errors_{t}_per_class", "error breakdown per class")]
    parts += ["<h2>AP by object size</h2>", _picture(pictures, "ap_by_size", "AP by size"),
              "<h2>Confusion matrix</h2><p class='note'>Rows: ground truth, then "
              "<i>background</i> (false positives no object explains, duplicates included). "
              "Columns: prediction, then <i>missed</i>. Same-class matches are COCOeval's at "
              "IoU .50; each remaining false positive is paired with the unmatched object of "
              "another class it overlaps most (IoU &ge; .50).</p>"]
    for t in types:
        parts.append(_picture(pictures, f"confusion_{t}", f"confusion, {TYPE_NAMES[t]}"))
    parts.append(_worst(summary))
    parts.append("<p class='note'>The numbers: <a href='analysis.json'>analysis.json</a>."
                 "</p></body></html>\n")
    path.write_text("\n".join(p for p in parts if p), encoding="utf-8")
    return path


def _worst(summary: dict) -> str:
    worst = summary["worst_images"]
    parts = ["<h2>Worst images</h2><p>Lowest F1 = 2 TP / (2 TP + FP + FN) per image, boxes "
             f"at IoU .50, detections scoring at least {summary['score_threshold']:g} "
             "(ties: more errors first); only images with an error. Left: predictions "
             "(<i>(wrong)</i>: false positive); right: ground truth (<i>(missed)</i>).</p>"]
    if not worst:
        return parts[0] + "<p>No image has an error.</p>"
    parts.append(_table(["rank", "image", "F1", "TP", "FP", "FN"],
                        [[i, w["file_name"] or w["image_id"], f"{w['f1']:.2f}",
                          w["true_positives"], w["false_positives"], w["false_negatives"]]
                         for i, w in enumerate(worst, 1)]))
    if not any(w["picture"] for w in worst):
        parts.append("<p class='note'>No pictures: give --images_dir to draw them.</p>")
    for i, w in enumerate(worst, 1):
        if w["picture"]:
            parts.append(f"<h4>{i}. {_e(w['file_name'] or w['image_id'])}: F1 "
                         f"{w['f1']:.2f}</h4><p><img src=\"{_e(w['picture'])}\" "
                         f"alt=\"{_e(w['file_name'])}\"></p>")
    return "\n".join(parts)
