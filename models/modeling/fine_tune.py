"""Loading `train_config.fine_tune_checkpoint` by `fine_tune_checkpoint_type`.

classification  the backbone only (a ResNet trained on another task, or any checkpoint
                written with a top-level `backbone`, which ours and Model Garden's have);
detection       everything whose shape does not depend on num_classes: a model trained on
                other classes starts with all of its backbone, FPN, RPN and head layers and
                only the class-sized output layers fresh;
full            everything, which must match the model exactly.

A checkpoint that does not fit is an error naming the variables that did not load.
"""
from __future__ import annotations

import copy

import tensorflow as tf
import tf_keras
from official.vision.modeling import factory

from models.builders.experiment_builder import BuiltPipeline
from models.modeling.checkpoints import (
    CheckpointError,
    mismatch_lines,
    resolve_checkpoint,
    variable_shapes,
)

TYPES = ("classification", "detection", "full")


class FineTuneCheckpointError(CheckpointError):
    """The fine-tune checkpoint is missing or does not fit the model."""


def _restore_exactly(path: str, root: str, obj, kind: str) -> None:
    try:
        status = tf.train.Checkpoint(**{root: obj}).read(path)
        status.expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError) as err:
        report = "\n".join(mismatch_lines(path, root, obj)) or f"  {str(err)[:500]}"
        raise FineTuneCheckpointError(
            f"fine_tune_checkpoint {path} does not fit the model for fine_tune_checkpoint_type "
            f"{kind!r}; variables that did not load:\n{report}") from None


def _checkpoint_num_classes(path: str) -> int | None:
    """Model Garden's class count (with background) of a detection checkpoint.

    Checkpoints store each object once, under its shortest path: Model Garden's trainer saves
    the heads at the top level (`detection_head/...`) as well as under `model/`.
    """
    for name, shape in variable_shapes(path).items():
        if "detection_head/" in name and name.endswith("_classifier/kernel"):
            return int(shape[-1])
    return None


def _build_like(built: BuiltPipeline, num_classes: int) -> tf_keras.Model:
    config = copy.deepcopy(built.task.model)
    config.num_classes = num_classes
    model = factory.build_maskrcnn(
        input_specs=tf_keras.layers.InputSpec(shape=[None] + config.input_size),
        model_config=config)
    model(tf_keras.Input(config.input_size), image_shape=tf_keras.layers.Input([2]),
          training=False)
    return model


def load_detection(model: tf_keras.Model, path: str, built: BuiltPipeline) -> list[str]:
    """Copies every variable whose shape matches; returns the skipped (class-sized) ones."""
    num_classes = _checkpoint_num_classes(path)
    if num_classes is None:
        raise FineTuneCheckpointError(f"fine_tune_checkpoint {path} is not a detection "
                                      "checkpoint (it has no detection head); use "
                                      "fine_tune_checkpoint_type: \"classification\"")
    source = _build_like(built, num_classes)
    _restore_exactly(path, "model", source, "detection")
    skipped = []
    for mine, theirs in zip(model.weights, source.weights):
        if mine.shape == theirs.shape:
            mine.assign(theirs)
        else:
            skipped.append(mine.name)
    return skipped


def initialize_from_checkpoint(model: tf_keras.Model, built: BuiltPipeline) -> str:
    """Loads the configured fine-tune checkpoint; returns a one-line account of it."""
    train = built.pipeline.train_config
    kind = train.fine_tune_checkpoint_type or "detection"
    if kind not in TYPES:
        raise FineTuneCheckpointError(f"fine_tune_checkpoint_type {kind!r} is not one of "
                                      f"{', '.join(TYPES)}")
    try:
        path = resolve_checkpoint(train.fine_tune_checkpoint, "fine_tune_checkpoint")
    except CheckpointError as err:
        raise FineTuneCheckpointError(str(err)) from None
    if kind == "classification":
        _restore_exactly(path, "backbone", model.backbone, kind)
        return f"loaded the backbone from {path}"
    if kind == "full":
        _restore_exactly(path, "model", model, kind)
        return f"loaded every variable from {path}"
    skipped = load_detection(model, path, built)
    return (f"loaded {path} except {len(skipped)} class-dependent variable(s)"
            if skipped else f"loaded every variable from {path}")
