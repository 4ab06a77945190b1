"""Exporting a trained checkpoint as a SavedModel, as the OD API's exporter_main_v2.py does.

The export directory holds saved_model/ (signature `serving_default`, see
models/export_signatures.py), checkpoint/ (the restored weights re-saved as ckpt-0),
pipeline.config (the effective config, overrides applied) and label_map.pbtxt (a copy of
train_input_reader.label_map_path). It is written into a hidden sibling directory and renamed
into place at the end, so a failed export leaves nothing behind and a reader never sees half
an export.

The checkpoint is compared with the model the config describes before anything is restored:
a checkpoint of another num_classes or backbone fails with the variables that differ, instead
of TensorFlow's partial restore or a shape error deep inside Keras.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import tensorflow as tf
import tf_keras
from official.core import export_base
from official.vision.modeling import factory

from models.builders.experiment_builder import BuiltPipeline
from models.checkpoints import (CheckpointError, mismatch_lines, resolve_checkpoint,
                                restore_weights)
from models.export_signatures import INPUT_TYPES, ServingModule
from pipelines.config_util import save_pipeline_config
from records.label_map import read_label_map

MODEL_KEY = "model"  # the Keras model's name in training and exported checkpoints


class ExportError(ValueError):
    """The export cannot be done as asked; the message says what to change."""


class CheckpointMismatchError(ExportError):
    """The checkpoint's variables do not fit the model the pipeline config describes."""


@contextlib.contextmanager
def staged_directory(final: str | Path, owned_marker: str) -> Iterator[Path]:
    """Yields an empty hidden sibling of `final`; on success it replaces `final`.

    An existing `final` is replaced only when it is empty or holds `owned_marker` (a file or
    folder our tools write), so a mistyped --output_dir never deletes someone's files. On an
    exception the sibling is removed and `final` is untouched.
    """
    final = Path(final).absolute()
    if final.exists() and not final.is_dir():
        raise ExportError(f"{final} exists and is not a directory")
    if final.is_dir() and any(final.iterdir()) and not (final / owned_marker).exists():
        raise ExportError(f"{final} is not empty and holds no {owned_marker}: choose a new "
                          "directory (or empty it); it is replaced as a whole")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial",
                                    dir=final.parent))
    try:
        yield staging
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes 0700
        if final.exists():
            retired = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(final, retired)
            os.rename(staging, final)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


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
    try:
        checkpoint = resolve_checkpoint(str(checkpoint_path), "--trained_checkpoint_dir")
    except CheckpointError as err:
        raise ExportError(str(err)) from None
    model = build_model(built)
    check_checkpoint_matches(model, checkpoint, built, config_name)
    if restore_weights(model, checkpoint, built.pipeline.train_config.optimizer
                       .use_moving_average, MODEL_KEY):
        print(f"using the moving averages of the weights kept in {checkpoint} "
              "(optimizer.use_moving_average), as evaluation does", flush=True)
    return model, checkpoint


def export_inference_graph(built: BuiltPipeline, checkpoint_path: str | Path,
                           output_directory: str | Path, input_type: str = "image_tensor",
                           full_image_masks: bool = True, batch_size: int | None = 1,
                           config_name: str = "the pipeline config") -> Path:
    """Writes the export directory (see the module doc); returns its path.

    batch_size: the signature's batch dimension (None: any number of same-size images).
    """
    if input_type not in INPUT_TYPES:
        raise ExportError(f"unknown --input_type {input_type!r}; choose from "
                          f"{', '.join(INPUT_TYPES)}")
    label_map_path = built.train_label_map_path
    if label_map_path:
        read_label_map(label_map_path)  # a wrong path fails now, not after the export
    with staged_directory(output_directory, "saved_model") as staging:
        model, checkpoint = restore_model(built, checkpoint_path, config_name)
        module = ServingModule(built.experiment, model, built.resize, input_type,
                               full_image_masks, batch_size)
        export_base.export(module, function_keys={INPUT_TYPES[input_type]: "serving_default"},
                           export_savedmodel_dir=str(staging / "saved_model"),
                           timestamped=False)
        manager = tf.train.CheckpointManager(tf.train.Checkpoint(**{MODEL_KEY: model}),
                                             str(staging / "checkpoint"), max_to_keep=1)
        manager.save(checkpoint_number=0)
        save_pipeline_config(built.pipeline, staging / "pipeline.config")
        if label_map_path:
            shutil.copyfile(label_map_path, staging / "label_map.pbtxt")
    print(f"exported {checkpoint} to {Path(output_directory).absolute()}", flush=True)
    return Path(output_directory)
