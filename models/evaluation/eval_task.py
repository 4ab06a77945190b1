"""The task continuous evaluation runs: the training task, scoring with our COCO scorer.

On top of models/tasks/maskrcnn_task.py it scores with `coco_metrics.CocoMetric` (the OD
API's metric names, the scorer inference uses too), adds the Open Images challenge metric
when eval_config.metrics_set asks for it (computed on the same predictions), passes
each step's images and detections on to the TensorBoard eval pictures, and writes the
scorer's precision-recall curves as TensorBoard PR curves.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf
import tf_keras

from models.builders.experiment_builder import BuiltPipeline
from models.evaluation import eval_pictures, oid_challenge
from models.evaluation.coco_metrics import PREFIXES, CocoMetric, PrecisionRecall
from models.tasks.maskrcnn_task import MaskRCNNTask
from records.label_map import read_label_map


def class_names(label_map_path: str | None) -> Callable[[int], str]:
    """Label-map id -> display name for eval pictures (the id when there is no label map).

    The label map is read at the first picture: scoring never needs it.
    """
    @functools.lru_cache(maxsize=1)
    def label_map():
        return read_label_map(label_map_path) if label_map_path else None

    def name(label_id: int) -> str:
        return label_map().label_of(label_id) if label_map() is not None else str(label_id)
    return name


def pr_curve_tag(curve: PrecisionRecall) -> str:
    """e.g. DetectionBoxes_PrecisionRecall@.50IOU/circle (TensorBoard adds /pr_curves)."""
    iou = f"{curve.iou:.2f}".lstrip("0")  # 0.50 -> .50, as in mAP@.50IOU
    return f"{PREFIXES[curve.iou_type]}PrecisionRecall@{iou}IOU/{curve.name}"


def write_pr_curves(curves: Sequence[PrecisionRecall], step: int | tf.Tensor) -> int:
    """Writes each curve with TensorBoard's pr_curve summary to the default writer.

    COCOeval's curves are precision at 101 recall points, not at score thresholds: point i
    is recall i/100, so the PR tab's "threshold" is the recall level. True and false
    positives are the counts those imply (TP = recall x objects, FP = TP (1 - p) / p);
    recall points never reached have none, and TensorBoard leaves them out.
    """
    from tensorboard.plugins.pr_curve import summary as pr_summary

    for curve in curves:
        reached = curve.precision > 0
        true_positives = np.where(reached, curve.recall * curve.positives, 0.0)
        false_positives = np.where(
            reached, true_positives * (1 - curve.precision) / np.maximum(curve.precision, 1e-9),
            0.0)
        summary = pr_summary.raw_data_pb(
            pr_curve_tag(curve), true_positives, false_positives,
            np.zeros_like(true_positives), curve.positives - true_positives,
            curve.precision, curve.recall, num_thresholds=len(curve.recall),
            description=f"COCO {curve.iou_type} precision at recall i/100, IoU {curve.iou:.2f}")
        tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=step)
    return len(curves)


class EvaluationTask(MaskRCNNTask):
    """MaskRCNNTask with our scorer, the Open Images metric and eval pictures."""

    def __init__(self, built: BuiltPipeline, logging_dir: str = ""):
        super().__init__(built, logging_dir=logging_dir)
        eval_config = built.pipeline.eval_config
        self.visuals = eval_pictures.EvalVisuals(
            eval_pictures.VisualsConfig(eval_config.num_visualizations,
                                        eval_config.min_score_threshold,
                                        eval_config.max_num_boxes_to_visualize),
            class_names(built.eval_label_map_path))

    def _build_coco_metrics(self) -> None:
        """Our scorer on the ground truth the evaluation driver wrote (annotation_file)."""
        self.coco_metric = self.scorer = CocoMetric(self.task_config.annotation_file,
                                                    self.task_config.model.include_mask,
                                                    self.task_config.per_category_metrics)
        if oid_challenge.METRICS_SET in self.built.metrics_sets:
            self.coco_metric = oid_challenge.wrap_coco_metric(
                self.coco_metric, self.task_config.annotation_file,
                self.built.eval_label_map_path or "")

    def validation_step(self, inputs: tuple[Any, Any], model: tf_keras.Model, metrics=None):
        """Model Garden's step (one model call), also passing on what the eval images need."""
        images, labels = inputs
        outputs = model(images, anchor_boxes=labels["anchor_boxes"],
                        image_shape=labels["image_info"][:, 1, :], training=False)
        logs = {self.loss: 0}
        self._update_metrics(labels, outputs, logs)
        if self.visuals.enabled:
            logs[eval_pictures.STEP_KEY] = eval_pictures.step_tensors(images, labels, outputs)
        return logs

    def aggregate_logs(self, state=None, step_outputs=None):
        if not state:
            self.visuals.reset()
        carried = (step_outputs or {}).pop(eval_pictures.STEP_KEY, None)
        if carried is not None:
            self.visuals.collect(carried)
        return super().aggregate_logs(state, step_outputs)

    def reduce_aggregated_logs(self, aggregated_logs, global_step=None):
        logs = super().reduce_aggregated_logs(aggregated_logs, global_step)
        if global_step is not None:
            self.visuals.write_summaries(global_step)
            scorer = getattr(self, "scorer", None)  # there when COCO metrics are built
            if scorer is not None:
                write_pr_curves(scorer.curves, global_step)
        return logs
