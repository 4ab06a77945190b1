"""The Keras model of a pipeline config, built and restored from a checkpoint.

Shared by the exporter, the stage pictures and the benchmarks, so every tool builds the
model the same way and reports a checkpoint that does not fit by the variables that differ
(a checkpoint of another num_classes or backbone), instead of TensorFlow's partial restore
or a shape error deep inside Keras.
"""
from __future__ import annotations

import logging
from pathlib import Path

import tensorflow as tf
import tf_keras
from official.vision.modeling import factory

from models.builders.experiment_builder import BuiltPipeline
from models.modeling.checkpoints import (
    CheckpointError,
    mismatch_lines,
    resolve_checkpoint,
    restore_weights,
)

log = logging.getLogger(__name__)
MODEL_KEY = "model"  # the Keras model's name in training and exported checkpoints


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's variables do not fit the model the pipeline config describes."""


def check_checkpoint_matches(model: tf_keras.Model, checkpoint: str, built: BuiltPipeline,
                             config_name: str = "the pipeline config") -> None:
    """Raises CheckpointMismatchError naming the variables that differ."""
    problems = mismatch_lines(checkpoint, MODEL_KEY, model, allow_extra=False)
    if not problems:
        return
    faster_rcnn = built.pipeline.model.faster_rcnn
    raise CheckpointMismatchError("\n".join(
        [f"checkpoint {checkpoint} does not match {config_name} (num_classes "
         f"{faster_rcnn.num_classes}, {faster_rcnn.feature_extractor.type}, "
         f"number_of_stages {faster_rcnn.number_of_stages}):"]
        + problems
        + ["Export with the pipeline.config the checkpoint was trained with (the one "
           "model_main_tf2.py saved in its model_dir)."]))


def build_model(built: BuiltPipeline) -> tf_keras.Model:
    """The Keras model of the config, with every variable created.

    Built as Model Garden's exporter builds it, and run once through `call` (not
    `__call__`): a model that recorded a Keras input spec would make tf.saved_model.save
    trace it in training mode, which needs ground truth.
    """
    config = built.task.model
    padded = built.resize.padded_size(config.max_level)
    model = factory.build_maskrcnn(tf_keras.layers.InputSpec(shape=[None, *padded, 3]), config)
    model.call(tf.zeros([1, *padded, 3]), image_shape=tf.constant([padded], tf.float32),
               training=False)
    return model


def restore_model(built: BuiltPipeline, checkpoint_path: str | Path,
                  config_name: str = "the pipeline config") -> tuple[tf_keras.Model, str]:
    """Builds the config's model and restores it from a checkpoint (dir or prefix).

    Returns the model and the checkpoint prefix used. A config with
    optimizer.use_moving_average gets the weight averages the checkpoint holds, the weights
    evaluation scored.
    """
    checkpoint = resolve_checkpoint(str(checkpoint_path), "--trained_checkpoint_dir")
    model = build_model(built)
    check_checkpoint_matches(model, checkpoint, built, config_name)
    if restore_weights(model, checkpoint, built.pipeline.train_config.optimizer
                       .use_moving_average, MODEL_KEY):
        log.info("using the moving averages of the weights kept in %s "
                 "(optimizer.use_moving_average), as evaluation does", checkpoint)
    return model, checkpoint
