"""Pasting box-relative mask probabilities into full-image 0/1 masks.

The serving signature, the evaluation pictures, inference on SavedModels exported without
full-image masks and the stage pictures all paste with `paste_masks`, so a mask looks the
same wherever it is drawn or scored.
"""
from __future__ import annotations

import tensorflow as tf

MASK_THRESHOLD = 0.5  # Model Garden's COCO evaluator pastes masks at > 0.5 too


def _paste_one(mask: tf.Tensor, box: tf.Tensor, height: tf.Tensor, width: tf.Tensor
               ) -> tf.Tensor:
    """One [M, M] mask into its box of an image [height, width] (see paste_masks)."""
    size = tf.cast(tf.shape(mask)[0], tf.float32)
    # Repeat the border cells once so that sampling up to the box edge holds the edge value.
    padded = tf.pad(mask[tf.newaxis, :, :, tf.newaxis], [[0, 0], [1, 1], [1, 1], [0, 0]],
                    "SYMMETRIC")
    last = size + 1.0  # the padded grid's last index
    ymin, xmin, ymax, xmax = tf.unstack(box)
    box_h, box_w = tf.maximum(ymax - ymin, 1e-6), tf.maximum(xmax - xmin, 1e-6)
    # Pixels whose centre lies in the box: rows top..bottom-1, columns left..right-1.
    top = tf.clip_by_value(tf.math.ceil(ymin - 0.5), 0.0, tf.cast(height, tf.float32))
    bottom = tf.clip_by_value(tf.math.ceil(ymax - 0.5), 0.0, tf.cast(height, tf.float32))
    left = tf.clip_by_value(tf.math.ceil(xmin - 0.5), 0.0, tf.cast(width, tf.float32))
    right = tf.clip_by_value(tf.math.ceil(xmax - 0.5), 0.0, tf.cast(width, tf.float32))
    not_empty = tf.cast((bottom > top) & (right > left), tf.uint8)
    rows, cols = tf.maximum(bottom - top, 1.0), tf.maximum(right - left, 1.0)
    # An empty box still yields one (zeroed) pixel, which must lie inside the image.
    top = tf.minimum(top, tf.cast(height, tf.float32) - rows)
    left = tf.minimum(left, tf.cast(width, tf.float32) - cols)
    # crop_and_resize samples output row r at y1 * last + r * (y2 - y1) * last / (rows - 1);
    # choose y1, y2 so that this is pixel (top + r)'s centre in the padded grid:
    # (top + r + 0.5 - ymin) * M / box_h - 0.5 + 1 (and the same for columns).
    y1 = ((top + 0.5 - ymin) * size / box_h + 0.5) / last
    x1 = ((left + 0.5 - xmin) * size / box_w + 0.5) / last
    y2 = y1 + size / box_h * (rows - 1.0) / last
    x2 = x1 + size / box_w * (cols - 1.0) / last
    patch = tf.image.crop_and_resize(padded, [[y1, x1, y2, x2]], [0],
                                     tf.cast(tf.stack([rows, cols]), tf.int32))[0, :, :, 0]
    patch = tf.cast(patch > MASK_THRESHOLD, tf.uint8) * not_empty
    top_i, left_i = tf.cast(top, tf.int32), tf.cast(left, tf.int32)
    rows_i, cols_i = tf.cast(rows, tf.int32), tf.cast(cols, tf.int32)
    return tf.pad(patch, [[top_i, height - top_i - rows_i], [left_i, width - left_i - cols_i]])


def paste_masks(box_masks: tf.Tensor, boxes: tf.Tensor, height: tf.Tensor, width: tf.Tensor
                ) -> tf.Tensor:
    """Box-relative masks [K, M, M] -> 0/1 uint8 masks [K, height, width].

    `boxes` are [K, 4] in original pixels (edges, not centres). Each pixel whose centre lies
    in the box is mapped into the box's M x M grid (cell centres at (i + 0.5) * box / M) and
    sampled bilinearly, the mask's edge values held up to the box edge; pixels outside the
    box are 0, so a mask never leaves its box. Only each box's own pixels are resampled (a
    loop over detections), which is 4x (512 px) to 20x (1024 px) faster than resampling
    whole images.
    """
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)

    def paste_all() -> tf.Tensor:
        pasted = tf.map_fn(lambda args: _paste_one(args[0], args[1], height, width),
                           (tf.cast(box_masks, tf.float32), tf.cast(boxes, tf.float32)),
                           fn_output_signature=tf.TensorSpec([None, None], tf.uint8))
        return tf.reshape(pasted, [-1, height, width])

    return tf.cond(tf.shape(box_masks)[0] > 0, paste_all,  # map_fn fails on no elements
                   lambda: tf.zeros([0, height, width], tf.uint8))
