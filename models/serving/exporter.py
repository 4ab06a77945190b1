"""Exporting a trained checkpoint as a SavedModel, as the OD API's exporter_main_v2.py does.

The export directory holds saved_model/ (signature `serving_default`, see
models/serving/signatures.py), checkpoint/ (the restored weights re-saved as ckpt-0),
pipeline.config (the effective config, overrides applied) and label_map.pbtxt (a copy of
train_input_reader.label_map_path). It is written into a hidden sibling directory and renamed
into place at the end, so a failed export leaves nothing behind and a reader never sees half
an export.

The checkpoint is compared with the model the config describes before anything is restored
(models/modeling/restore.py): a checkpoint of another num_classes or backbone fails with the
variables that differ.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import tensorflow as tf
from official.core import export_base

from core.atomic_io import staged_directory
from core.errors import UserError
from models.builders.experiment_builder import BuiltPipeline
from models.modeling.restore import MODEL_KEY, restore_model
from models.serving.signatures import INPUT_TYPES, ServingModule
from pipelines.config_util import save_pipeline_config
from records.label_map import copy_category_ids, read_label_map

log = logging.getLogger(__name__)


class ExportError(UserError, ValueError):
    """The export cannot be done as asked; the message says what to change."""


def export_inference_graph(built: BuiltPipeline, checkpoint_path: str | Path,
                           output_directory: str | Path, input_type: str = "image_tensor",
                           full_image_masks: bool = True, batch_size: int | None = 1,
                           config_name: str = "the pipeline config",
                           od_api_outputs: bool = False) -> Path:
    """Writes the export directory (see the module doc); returns its path.

    batch_size: the signature's batch dimension (None: any number of same-size images).
    od_api_outputs: also the OD API's raw and per-detection outputs, and its padding of
    detection_classes (models/serving/signatures.py), for OD API client code.
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
                               full_image_masks, batch_size, od_api_outputs)
        export_base.export(module, function_keys={INPUT_TYPES[input_type]: "serving_default"},
                           export_savedmodel_dir=str(staging / "saved_model"),
                           timestamped=False)
        manager = tf.train.CheckpointManager(tf.train.Checkpoint(**{MODEL_KEY: model}),
                                             str(staging / "checkpoint"), max_to_keep=1)
        manager.save(checkpoint_number=0)
        save_pipeline_config(built.pipeline, staging / "pipeline.config")
        if label_map_path:
            shutil.copyfile(label_map_path, staging / "label_map.pbtxt")
            copy_category_ids(label_map_path, staging)  # beside it when ids were renumbered
    log.info("exported %s to %s", checkpoint, Path(output_directory).absolute())
    return Path(output_directory)
