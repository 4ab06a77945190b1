"""Repeat-factor sampling (Gupta et al., LVIS): oversampling images of rare classes.

For each class c, f(c) is the fraction of training images that show it and
r(c) = max(1, sqrt(threshold / f(c))); an image is repeated r(I) = max over its classes of
r(c) times per epoch, stochastically rounded, so a class in 1% of the images is seen about
sqrt(threshold / 0.01) times as often while frequent classes keep their share. It is the
alternative to dropping data (create_tfrecords.py --max_images_per_class).
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Callable, Iterable

import numpy as np
import tensorflow as tf

from records import keys
from records.reader import iter_examples


def class_repeat_factors(patterns: Iterable[str], num_classes: int, threshold: float
                         ) -> np.ndarray:
    """r(c) for label ids 0..num_classes (index 0, the background, is 1)."""
    images = 0
    images_per_class: Counter = Counter()
    for _, _, example in iter_examples(list(patterns)):
        images += 1
        images_per_class.update(set(int(label) for label in example.labels))
    factors = np.ones(num_classes + 1, np.float32)
    for label, count in images_per_class.items():
        if 1 <= label <= num_classes:
            factors[label] = max(1.0, math.sqrt(threshold / (count / images)))
    return factors


def repeat_by_factor(base_fn: Callable, factors: np.ndarray) -> Callable:
    """Wraps a per-file dataset function so each record is repeated r(I) times."""
    table = tf.constant(factors, tf.float32)
    spec = {keys.OBJECT_CLASS_LABEL: tf.io.VarLenFeature(tf.int64)}

    def repeats(serialized: tf.Tensor) -> tf.data.Dataset:
        labels = tf.io.parse_single_example(serialized, spec)[keys.OBJECT_CLASS_LABEL].values
        labels = tf.clip_by_value(labels, 0, len(factors) - 1)
        factor = tf.reduce_max(tf.concat([[1.0], tf.gather(table, labels)], axis=0))
        count = tf.floor(factor) + tf.cast(tf.random.uniform([]) < factor - tf.floor(factor),
                                           tf.float32)
        return tf.data.Dataset.from_tensors(serialized).repeat(tf.cast(count, tf.int64))

    def dataset_fn(*args, **kwargs) -> tf.data.Dataset:
        return base_fn(*args, **kwargs).flat_map(repeats)
    return dataset_fn
