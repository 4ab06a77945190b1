"""Model Garden's trainer, reporting under the names Object Detection API users know, and
the one place a trainer is built for training or evaluation.

TensorBoard shows `Loss/RPNLoss/objectness_loss`, `Loss/BoxClassifierLoss/mask_loss`,
`Loss/total_loss`, `learning_rate`, ... for training (Orbit adds `steps_per_second`), and
`DetectionBoxes_Precision/mAP`, `DetectionMasks_Precision/mAP@.50IOU`, ... for evaluation
(named by models/evaluation/coco_metrics.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from official.core import base_trainer, train_utils
from official.modeling import performance

from models.builders.experiment_builder import BuiltPipeline
from models.tasks.maskrcnn_task import MaskRCNNTask
from models.tasks.metric_names import LOSS_NAMES, REGULARIZATION_LOSS

if TYPE_CHECKING:
    import tensorflow as tf


class Trainer(base_trainer.Trainer):
    def train_loop_end(self) -> dict:
        logs = super().train_loop_end()
        renamed = {LOSS_NAMES.get(name, name): value for name, value in logs.items()
                   if name not in ("training_loss", "model_loss")}
        if "total_loss" in logs and "model_loss" in logs:
            renamed[REGULARIZATION_LOSS] = logs["total_loss"] - logs["model_loss"]
        return renamed

    def eval_end(self, aggregated_logs=None) -> dict:
        logs = super().eval_end(aggregated_logs)
        return {name: value for name, value in logs.items() if name != "validation_loss"}


def set_experiment_precision(built: BuiltPipeline, precision: str) -> None:
    """The experiment config's precision and input dtypes (what Model Garden reads)."""
    built.experiment.runtime.mixed_precision_dtype = precision
    built.task.train_data.dtype = precision
    built.task.validation_data.dtype = precision


def apply_precision(built: BuiltPipeline, precision: str) -> None:
    """Mixed precision policy and input dtype for the placement's precision."""
    set_experiment_precision(built, precision)
    performance.set_mixed_precision_policy(precision)


def build_trainer(built: BuiltPipeline, model_dir: str, strategy: "tf.distribute.Strategy",
                  train: bool, evaluate: bool, task: MaskRCNNTask | None = None) -> Trainer:
    """The trainer of `task` (default: a training MaskRCNNTask), in the strategy's scope."""
    with strategy.scope():
        task = task or MaskRCNNTask(built, logging_dir=model_dir)
        return train_utils.create_trainer(built.experiment, task, train=train,
                                          evaluate=evaluate, trainer_cls=Trainer)
