"""The synthetic COCO sets of the conversion-at-scale benchmark, made once and kept.

`data_prep.synthetic` keeps every scene's masks in memory until it writes the annotations
(30 GB for 10,000 images of 640x480 with ten objects each), so this writes the same scenes
(640x480, 8-12 objects, seed 1: image i is the one bench_create_tfrecords converts) from a
pool of processes, one image at a time, and keeps only the COCO entries. The largest set is
generated; each smaller one is its first N images, in an annotation file of its own.

Polygons are the masks' outlines simplified to within 1 px (`simplify_polygons`), as
annotation tools draw them: about 30 vertices an outline and 4 kB of JSON an image, COCO's
own density (instances_train2017.json: 448 MB for 118k images). The traced pixel outlines
have about 300 vertices (43 kB an image), and a reader of one JSON file holds all of it.
"""
from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import cv2
import numpy as np

SEED, SPLIT, WIDTH, HEIGHT, OBJECTS = 1, "bench", 640, 480, (8, 12)
CHUNK = 50  # images per task of the generating pool
ANNOTATIONS = "annotations_1px"  # the simplified polygons' files (see the docstring)
SIMPLIFY_PIXELS = 1.0


def simplify_polygons(annotation: dict) -> dict:
    """The annotation with each polygon part simplified to within SIMPLIFY_PIXELS
    (Douglas-Peucker, OpenCV's approxPolyDP); parts that would fall below 3 vertices stay."""
    parts = annotation["segmentation"]
    if not isinstance(parts, list):
        return annotation
    simplified = []
    for part in parts:
        points = np.asarray(part, np.float32).reshape(-1, 1, 2)
        approx = cv2.approxPolyDP(points, SIMPLIFY_PIXELS, True).reshape(-1)
        simplified.append([float(v) for v in approx] if len(approx) >= 6 else part)
    return dict(annotation, segmentation=simplified)


def _generate(task: tuple[str, int, int]) -> list[tuple[dict, list[dict]]]:
    """Writes images [start, stop) and returns each one's COCO image entry and annotations
    (ids filled in by the caller)."""
    from data_prep.synthetic.coco_writer import coco_dict
    from data_prep.synthetic.scenes import encode_image, generate_image

    images_dir, start, stop = task
    out = []
    for index in range(start, stop):
        image = generate_image(SEED, SPLIT, index, HEIGHT, WIDTH, *OBJECTS)
        (Path(images_dir) / image.file_name).write_bytes(encode_image(image))
        entry = coco_dict([image])
        out.append((entry["images"][0], [simplify_polygons(a) for a in entry["annotations"]]))
    return out


def annotation_file(data_dir: Path, count: int) -> Path:
    return data_dir / ANNOTATIONS / f"instances_{count}.json"


def images_dir(data_dir: Path) -> Path:
    return data_dir / "images" / SPLIT


def ensure_sets(data_dir: Path, sizes: list[int], processes: int) -> None:
    """Generates the images of the largest size and one annotation file per size, unless a
    previous run left them (the largest annotation file is written last)."""
    sizes = sorted(sizes)
    if all(annotation_file(data_dir, n).exists() for n in sizes):
        return
    largest = sizes[-1]
    images = images_dir(data_dir)
    images.mkdir(parents=True, exist_ok=True)
    annotation_file(data_dir, largest).parent.mkdir(parents=True, exist_ok=True)
    tasks = [(str(images), s, min(s + CHUNK, largest)) for s in range(0, largest, CHUNK)]
    from data_prep.synthetic.coco_writer import coco_dict

    categories = coco_dict([])["categories"]
    image_entries: list[dict] = []
    prefix_bytes: dict[int, int] = {}  # size -> bytes of the annotation stream it takes
    stream_path = data_dir / ANNOTATIONS / ".annotations.jsonl"
    count = 0
    context = multiprocessing.get_context("fork")
    with context.Pool(processes) as pool, open(stream_path, "w") as stream:
        for chunk in pool.imap(_generate, tasks):
            for entry, anns in chunk:
                image_id = len(image_entries) + 1
                image_entries.append(dict(entry, id=image_id))
                for ann in anns:
                    count += 1
                    stream.write(("," if count > 1 else "") +
                                 json.dumps(dict(ann, id=count, image_id=image_id)))
                if image_id in sizes:
                    prefix_bytes[image_id] = stream.tell()
            print(f"  {len(image_entries)} of {largest} images", end="\r", flush=True)
    print()
    for size in sizes:  # the largest last: its presence says the set is complete
        _write(annotation_file(data_dir, size), image_entries[:size], stream_path,
               prefix_bytes[size], categories)
    stream_path.unlink()


def _write(path: Path, images: list[dict], stream_path: Path, stream_bytes: int,
           categories: list) -> None:
    """A COCO file of `images` and the first `stream_bytes` of the annotation stream."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f, open(stream_path) as stream:
        f.write('{"info": {"description": "synthetic shapes (benchmarks/scale_data.py)"}, ')
        f.write(f'"images": {json.dumps(images)}, "annotations": [')
        left = stream_bytes
        while left:
            block = stream.read(min(left, 1 << 24))
            f.write(block)
            left -= len(block)
        f.write(f'], "categories": {json.dumps(categories)}}}')
    tmp.replace(path)
