"""Train/validation splits and class balancing, by image, deterministic from a seed.

Small data sets are unbalanced (50 classes with 1 to 32 images each): a random validation
split easily misses the rare classes, and the frequent classes dominate training. These
functions work on annotations only, before any image is read.
"""
from __future__ import annotations

import itertools
import random
from collections import Counter
from typing import Sequence

from data_prep.annotations import ImageAnnotation


def image_classes(image: ImageAnnotation) -> set[str]:
    return {obj.class_name for obj in image.objects}


def split_train_val(images: Sequence[ImageAnnotation], val_fraction: float, seed: int
                    ) -> tuple[list[ImageAnnotation], list[ImageAnnotation]]:
    """Splits by image: about `val_fraction` of the images go to validation.

    Every class with at least two images gets one into validation first (rarest class
    first, preferring images that cover several such classes), so validation covers every
    class that its images allow; the rest of the validation images are drawn at random.
    Input order is kept within each split.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"--val_fraction must be between 0 and 1, got {val_fraction}")
    order = list(range(len(images)))
    random.Random(seed).shuffle(order)
    rank = {index: position for position, index in enumerate(order)}
    wanted = max(1, round(val_fraction * len(images))) if len(images) >= 2 else 0
    classes_of = [image_classes(image) for image in images]
    images_per_class = Counter(c for classes in classes_of for c in classes)
    val: set[int] = set()
    covered: set[str] = set()
    for name in sorted(images_per_class, key=lambda c: (images_per_class[c], c)):
        if name in covered or images_per_class[name] < 2:
            continue
        candidates = [i for i in order if name in classes_of[i] and i not in val]
        best = max(candidates, key=lambda i: (len(classes_of[i] - covered), -rank[i]))
        val.add(best)
        covered |= classes_of[best]
    for index in order:
        if len(val) >= wanted:
            break
        val.add(index)
    train = [image for i, image in enumerate(images) if i not in val]
    return train, [image for i, image in enumerate(images) if i in val]


def cap_images_per_class(images: Sequence[ImageAnnotation], max_images: int, seed: int
                         ) -> tuple[list[ImageAnnotation], int]:
    """Keeps an image while any of its classes has fewer than `max_images` kept images.

    An image of a frequent class that also shows a rare class is kept, so capping never
    costs a rare class its examples. Images without objects are kept. Returns the kept
    images (input order) and how many were dropped.
    """
    order = list(range(len(images)))
    random.Random(seed).shuffle(order)
    kept_count: Counter = Counter()
    keep: set[int] = set()
    for index in order:
        classes = image_classes(images[index])
        if not classes or any(kept_count[c] < max_images for c in classes):
            keep.add(index)
            kept_count.update(classes)
    return [image for i, image in enumerate(images) if i in keep], len(images) - len(keep)


def repeat_rare_classes(images: Sequence[ImageAnnotation], min_images: int
                        ) -> tuple[list[ImageAnnotation], int]:
    """Repeats the images of classes with fewer than `min_images` images until they have
    at least that many (a repeated image counts for every class it shows).

    Returns the images with the repeats appended after the originals, and the number of
    repeats. Rarest classes are served first.
    """
    counts = Counter(c for image in images for c in image_classes(image))
    repeats: list[ImageAnnotation] = []
    for name in sorted(counts, key=lambda c: (counts[c], c)):
        if counts[name] >= min_images:
            continue
        holders = [image for image in images if name in image_classes(image)]
        for image in itertools.islice(itertools.cycle(holders), min_images - counts[name]):
            repeats.append(image)
            counts.update(image_classes(image))
    return list(images) + repeats, len(repeats)
