"""Hypothesis strategies for hostile annotation inputs of every format.

Each strategy draws a `FuzzInput`: the files of one conversion (annotation files, and for
VOC and Open Images their PNGs and images) and the format's command-line flags. Values are
mostly plausible, so that conversions get past the first check, and any of them may be
replaced by a value of another type, NaN, Infinity, a huge or negative number, a string, a
list or a dict; keys go missing and structures change shape.
"""
from __future__ import annotations

import base64
import csv
import dataclasses
import io
import json

import numpy as np
from hypothesis import strategies as st
from PIL import Image

# Images every example may name (written once into the pool directory by the harness).
POOL = ("a.jpg", "b.png", "rotated.jpg", "corrupt.jpg", "empty.jpg")
SIZES = {"a.jpg": (32, 24), "b.png": (20, 20), "rotated.jpg": (24, 32)}


def pool_files() -> dict[str, bytes]:
    """The pool images: a JPEG, a PNG, an EXIF-rotated JPEG, a corrupt and an empty file."""
    files = {}
    rng = np.random.default_rng(0)
    for name, (width, height) in SIZES.items():
        out = io.BytesIO()
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        kwargs = {}
        if name == "rotated.jpg":
            exif = Image.Exif()
            exif[0x0112] = 6
            kwargs["exif"] = exif
        Image.fromarray(pixels).save(out, format="PNG" if name.endswith(".png") else "JPEG",
                                     **kwargs)
        files[name] = out.getvalue()
    files["corrupt.jpg"] = files["a.jpg"][:200]
    files["empty.jpg"] = b""
    return files


@dataclasses.dataclass
class FuzzInput:
    format: str
    files: dict[str, bytes]  # relative path -> contents, written into the example directory
    flags: list[str]  # the format's flags; {dir} and {pool} are filled in by the harness


JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-2 ** 63, 2 ** 63), st.floats(),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e9, -1e9, 1e300, 0, -1]),
    st.text(max_size=8), st.lists(st.integers(-5, 5), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(-5, 5), max_size=2))


def rarely(probability: float):
    """True with about this probability (Hypothesis picks one_of branches evenly, so
    weights are drawn explicitly); shrinks to False."""
    slots = max(2, round(1 / probability))
    return st.sampled_from([False] * (slots - 1) + [True])


def sometimes(strategy, probability_junk: float = 0.1):
    """`strategy`, or now and then a value of another kind."""
    if not probability_junk:
        return strategy
    return rarely(probability_junk).flatmap(lambda junk: JUNK if junk else strategy)


HOSTILE_NUMBERS = st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e9, -1e9,
                                   1e300, 5000.0, -3000.0, True, False, "7", None])
coordinate = st.sampled_from(["plain"] * 30 + ["hostile", "junk"]).flatmap(
    lambda kind: {"plain": st.floats(-8, 40, allow_nan=False), "hostile": HOSTILE_NUMBERS,
                  "junk": JUNK}[kind])
file_name = rarely(0.15).flatmap(lambda odd: st.one_of(st.sampled_from(
    ["missing.jpg", "../a.jpg", "/etc/passwd", "a\x00.jpg", "http://x/a.jpg", "", "sub/a.jpg"]),
    JUNK) if odd else st.sampled_from(POOL[:3]))


def _maybe_drop(draw, entry: dict) -> dict:
    """`entry` with, now and then, a key left out."""
    return {k: v for k, v in entry.items() if not draw(rarely(0.04))}


def _json(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


@st.composite
def polygon(draw):
    points = draw(st.integers(0, 8))
    return [draw(coordinate) for _ in range(2 * points + draw(st.sampled_from([0, 0, 0, 1])))]


@st.composite
def rle(draw, height: int, width: int):
    total = height * width
    kind = draw(st.sampled_from(["exact", "short", "string", "junk"]))
    if kind == "exact":
        cut = draw(st.integers(0, total))
        return {"size": [height, width], "counts": [cut, total - cut]}
    if kind == "short":
        return {"size": [height, width], "counts": [draw(st.integers(0, total))]}
    if kind == "string":
        return {"size": draw(st.sampled_from([[height, width], [2, 2], [height]])),
                "counts": draw(st.text(alphabet="0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                "[]^_`abcdefghijklmno!~", max_size=12))}
    return {"size": draw(JUNK), "counts": draw(JUNK)}


@st.composite
def coco(draw) -> FuzzInput:
    # Half the examples are clean but for hostile numbers in coordinates and boxes, so
    # that they reach rasterization; the other half are hostile throughout.
    mixed = draw(st.booleans())

    def j(probability: float) -> float:
        return probability if mixed else 0.0

    def drop(entry: dict) -> dict:
        return _maybe_drop(draw, entry) if mixed else entry

    categories = [{"id": draw(sometimes(st.just(index + 1), j(0.03))),
                   "name": draw(sometimes(st.just(["cat", "dog", "cow"][index]), j(0.03)))}
                  for index in range(draw(st.integers(0 if mixed else 1, 3)))]
    images = []
    for index in range(draw(st.integers(0 if mixed else 1, 4))):
        name = draw(file_name if mixed else st.sampled_from(POOL[:3]))
        width, height = SIZES.get(name, (32, 24)) if isinstance(name, str) else (32, 24)
        entry = {"id": draw(sometimes(st.just(index + 1), j(0.05))), "file_name": name,
                 "width": draw(sometimes(st.just(width), j(0.1))),
                 "height": draw(sometimes(st.just(height), j(0.1)))}
        images.append(drop(entry))
    annotations = []
    for index in range(draw(st.integers(0, 6))):
        segmentation = draw(st.sampled_from(["polygons", "polygons", "flat", "rle", "junk"][
            :5 if mixed else 4]).flatmap(lambda kind: {
                "polygons": st.lists(polygon(), min_size=1, max_size=2), "flat": polygon(),
                "rle": rle(24, 32), "junk": JUNK}[kind]))
        entry = {"id": draw(sometimes(st.just(index + 1), j(0.05))),
                 "image_id": draw(sometimes(st.integers(1, max(1, len(images))), j(0.05))),
                 "category_id": draw(sometimes(st.integers(1, max(1, len(categories))),
                                               j(0.05))),
                 "segmentation": segmentation,
                 "bbox": draw(sometimes(st.one_of(st.lists(coordinate, min_size=4,
                                                           max_size=4), st.none()), j(0.1))),
                 "iscrowd": draw(sometimes(st.sampled_from([0, 1]), j(0.05))),
                 "area": draw(sometimes(st.floats(0, 500, allow_nan=False), j(0.05)))}
        annotations.append(drop(entry))
    document = {"images": images, "annotations": annotations, "categories": categories}
    document = draw(sometimes(st.just(document), j(0.05)))
    return FuzzInput("coco", {"instances.json": _json(document)},
                     ["--annotations", "{dir}/instances.json", "--images_dir", "{pool}"])


@st.composite
def via_shape(draw):
    name = draw(st.sampled_from(["polygon", "polyline", "rect", "circle", "ellipse", "point",
                                 "blob", None]))
    shape = {"name": name}
    if name in ("polygon", "polyline"):
        count = draw(st.integers(0, 6))
        shape["all_points_x"] = [draw(coordinate) for _ in range(count)]
        shape["all_points_y"] = [draw(coordinate) for _ in range(count
                                                             + draw(st.sampled_from([0, 0, 1])))]
    elif name == "rect":
        shape.update(x=draw(coordinate), y=draw(coordinate), width=draw(coordinate),
                     height=draw(coordinate))
    elif name in ("circle", "ellipse"):
        shape.update(cx=draw(coordinate), cy=draw(coordinate), r=draw(coordinate),
                     rx=draw(coordinate), ry=draw(coordinate), theta=draw(coordinate))
    elif name == "point":
        shape.update(cx=draw(coordinate), cy=draw(coordinate))
    return _maybe_drop(draw, shape) if draw(st.booleans()) else shape


@st.composite
def via_region(draw):
    attributes = draw(sometimes(st.one_of(
        st.fixed_dictionaries({"kind": st.sampled_from(["cat", "dog", "", "cat "])}),
        st.fixed_dictionaries({"kind": st.dictionaries(st.sampled_from(["cat", "dog"]),
                                                       st.booleans(), max_size=2)}),
        st.just({})), 0.05))
    return {"shape_attributes": draw(sometimes(via_shape(), 0.05)),
            "region_attributes": attributes}


@st.composite
def via_images(draw, version: int) -> dict:
    document = {}
    for _ in range(draw(st.integers(0, 3))):
        name = draw(file_name)
        regions = [draw(via_region()) for _ in range(draw(st.integers(0, 4)))]
        if version == 1:
            regions = {str(i): r for i, r in enumerate(regions)}
        regions = draw(sometimes(st.just(regions), 0.05))
        key = f"{name}{draw(st.integers(0, 99))}" if isinstance(name, str) else str(name)
        document[key] = {"filename": name, "size": draw(sometimes(st.integers(0, 999), 0.1)),
                         "regions": regions, "file_attributes": {}}
    return document


def _flags_via(path: str, draw) -> list[str]:
    flags = ["--annotations", "{dir}/" + path, "--images_dir", "{pool}"]
    choice = draw(st.sampled_from(["attribute", "default", "both", "none"]))
    if choice in ("attribute", "both"):
        flags += ["--class_attribute", "kind"]
    if choice in ("default", "both"):
        flags += ["--default_class", "thing"]
    return flags


@st.composite
def via1(draw) -> FuzzInput:
    document = draw(via_images(1))
    text = _json(document)
    if draw(st.integers(0, 9)) == 0 and document:  # a key written twice
        key = next(iter(document))
        text = text[:-1] + b", " + _json({key: document[key]})[1:]
    return FuzzInput("via", {"via.json": text}, _flags_via("via.json", draw))


@st.composite
def via2(draw) -> FuzzInput:
    images = draw(via_images(2))
    document = draw(st.one_of(st.just(images), st.just({
        "_via_img_metadata": images,
        "_via_attributes": {"region": {"kind": {"type": draw(st.sampled_from(
            ["dropdown", "radio", "checkbox", "text", 3])), "options": draw(st.one_of(
                st.just({"cat": "", "dog": ""}), JUNK))}}}})))
    return FuzzInput("via", {"via.json": _json(document)}, _flags_via("via.json", draw))


@st.composite
def via_csv(draw) -> FuzzInput:
    out = io.StringIO()
    writer = csv.writer(out)
    if draw(st.booleans()):
        writer.writerow(["filename", "file_size", "file_attributes", "region_count",
                         "region_id", "region_shape_attributes", "region_attributes"])
    for index in range(draw(st.integers(0, 5))):
        cells = [draw(file_name), draw(st.integers(0, 9)), "{}", draw(st.integers(0, 3)), index,
                 json.dumps(draw(via_shape()), allow_nan=True),
                 json.dumps(draw(via_region())["region_attributes"], allow_nan=True)]
        if draw(st.integers(0, 5)) == 0:
            cells = cells[:draw(st.integers(0, 7))]
        writer.writerow([str(c) for c in cells])
    text = out.getvalue()
    if draw(st.integers(0, 5)) == 0:  # JSON cells left unquoted, as some scripts write them
        text = text.replace('"', "")
    return FuzzInput("via", {"via.csv": text.encode()}, _flags_via("via.csv", draw))


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array, mode).save(out, format="PNG")
    return out.getvalue()


@st.composite
def voc(draw) -> FuzzInput:
    files = {}
    ids = [f"2008_{i:06d}" for i in range(draw(st.integers(1, 3)))]
    pool = pool_files()
    for image_id in ids:
        width, height = draw(st.sampled_from([(32, 24), (20, 20)]))
        objects = draw(st.integers(0, 3))
        names = [draw(st.sampled_from(["cat", "dog", "person", "blob", ""]))
                 for _ in range(objects)]
        xml = ["<annotation>", f"<filename>{image_id}.jpg</filename>",
               f"<size><width>{draw(sometimes(st.just(width), 0.1))}</width>"
               f"<height>{draw(sometimes(st.just(height), 0.1))}</height></size>"]
        for name in names:
            box = [draw(coordinate) for _ in range(4)]
            xml.append(f"<object><name>{name}</name><difficult>{draw(st.sampled_from(['0', '1', 'x']))}"
                       f"</difficult><bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin>"
                       f"<xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object>")
        xml.append("</annotation>")
        text = "".join(xml)
        if draw(st.integers(0, 9)) == 0:
            text = text[:draw(st.integers(0, len(text)))]
        files[f"VOC/Annotations/{image_id}.xml"] = text.encode()
        mask_w, mask_h = draw(st.sampled_from([(width, height), (width, height), (7, 5)]))
        rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))  # pixels: no
        indices = rng.choice(np.array([0, 1, 2, 3, 255], np.uint8),  # choice per pixel
                             size=(mask_h, mask_w), p=[0.6, 0.15, 0.1, 0.05, 0.1])
        files[f"VOC/SegmentationObject/{image_id}.png"] = draw(st.one_of(
            st.just(_png(indices)), st.just(b"not a png")))
        files[f"VOC/SegmentationClass/{image_id}.png"] = _png(np.minimum(indices, 20))
        files[f"VOC/JPEGImages/{image_id}.jpg"] = draw(st.sampled_from(
            [pool["a.jpg"], pool["b.png"], pool["corrupt.jpg"], pool["rotated.jpg"]]))
    return FuzzInput("voc", files, ["--annotations", "{dir}/VOC"])


@st.composite
def openimages(draw) -> FuzzInput:
    mids = ["/m/01", "/m/02", "/m/03"]
    descriptions = "LabelName,DisplayName\n" + "".join(
        f"{mid},{name}\n" for mid, name in zip(mids, ["Cat", "Dog", "Person"]))
    files = {"classes.csv": descriptions.encode()}
    rows = [["MaskPath", "ImageID", "LabelName", "BoxID", "BoxXMin", "BoxXMax", "BoxYMin",
             "BoxYMax", "PredictedIoU", "Clicks"]]
    for index in range(draw(st.integers(0, 5))):
        image = draw(st.sampled_from(["a", "b", "rotated", "corrupt", "missing"]))
        mask = f"{image}_{index}.png"
        if draw(st.integers(0, 4)):
            width, height = draw(st.sampled_from([(64, 48), (40, 40), (3, 2)]))
            rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
            bits = rng.random((height, width)) < draw(st.sampled_from([0.0, 0.3, 0.9]))
            files[f"masks/{mask}"] = draw(st.one_of(
                st.just(_png(bits)), st.just(b"\x89PNG broken")))
        box = [str(draw(sometimes(st.floats(0, 1), 0.1))) for _ in range(4)]
        rows.append([mask, image, draw(sometimes(st.sampled_from(mids), 0.1)),
                     str(index), *box, "0.9", ""])
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    files["segmentation.csv"] = out.getvalue().encode()
    flags = ["--annotations", "{dir}/segmentation.csv", "--images_dir", "{pool}",
             "--masks_dir", "{dir}/masks", "--class_descriptions", "{dir}/classes.csv"]
    return FuzzInput("openimages", files, flags)


LABELME_SHAPES = ["polygon", "rectangle", "circle", "mask", "oriented_rectangle", "line",
                  "linestrip", "point", "cuboid", None]
POINT_COUNTS = {"rectangle": 2, "circle": 2, "mask": 2, "line": 2, "point": 1,
                "oriented_rectangle": 4}


@st.composite
def labelme_shape(draw, mixed: bool) -> dict:
    kind = draw(st.sampled_from(LABELME_SHAPES))
    count = POINT_COUNTS.get(kind, draw(st.integers(0, 6))) + draw(st.sampled_from([0, 0, 0, 1]))
    points = [[draw(coordinate), draw(coordinate)] for _ in range(count)]
    junk = 0.05 if mixed else 0.0
    shape = {"label": draw(sometimes(st.sampled_from(["cat", "dog", "cat", "__ignore__", ""]),
                                     junk)),
             "points": draw(sometimes(st.just(points), junk)),
             "group_id": draw(sometimes(st.sampled_from([None, None, None, 0, 1]), junk)),
             "description": "", "shape_type": kind, "flags": {}, "mask": None}
    if kind == "mask":
        patch = np.zeros((draw(st.integers(1, 9)), draw(st.integers(1, 9))), np.uint8)
        patch[::2] = 1
        shape["mask"] = draw(st.one_of(st.just(base64.b64encode(_png(patch)).decode()),
                                       st.just("no base64!"), JUNK))
    return _maybe_drop(draw, shape) if mixed else shape


@st.composite
def labelme(draw) -> FuzzInput:
    """Labelme JSON files; embedded images are extracted into --labelme_work_dir (in the
    example's directory): the harness checks the output directory in this process, before
    the exit that removes the default work directory inside it."""
    mixed = draw(st.booleans())
    pool = pool_files()
    files = {}
    for index in range(draw(st.integers(1, 3))):
        name = draw(file_name if mixed else st.sampled_from(POOL[:3]))
        embedded = name if isinstance(name, str) and name in SIZES else "a.jpg"
        width, height = SIZES[embedded]
        data = draw(st.sampled_from(["none", "none", "pool", "corrupt", "junk"]))
        image_data = {"none": None, "pool": base64.b64encode(pool[embedded]).decode(),
                      "corrupt": base64.b64encode(pool["corrupt.jpg"]).decode()}.get(data)
        if data == "junk":
            image_data = draw(JUNK)
        junk = 0.1 if mixed else 0.0
        document = {"version": "5.5.0", "flags": {},
                    "shapes": [draw(labelme_shape(mixed)) for _ in range(draw(st.integers(0, 4)))],
                    "imagePath": name, "imageData": image_data,
                    "imageHeight": draw(sometimes(st.just(height), junk)),
                    "imageWidth": draw(sometimes(st.just(width), junk))}
        document = draw(sometimes(st.just(_maybe_drop(draw, document) if mixed else document),
                                  0.05 if mixed else 0.0))
        text = _json(document)
        if mixed and draw(st.integers(0, 19)) == 0:  # not JSON at all
            text = text[:draw(st.integers(0, len(text)))]
        files[f"labelme/{index:02d}.json"] = text
    flags = ["--annotations", "{dir}/labelme", "--images_dir", "{pool}",
             "--labelme_work_dir", "{dir}/extracted"]
    return FuzzInput("labelme", files, flags)


FORMATS = {"coco": coco(), "via1": via1(), "via2": via2(), "via_csv": via_csv(), "voc": voc(),
           "openimages": openimages(), "labelme": labelme()}
