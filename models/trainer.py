"""Model Garden's trainer, reporting under the names Object Detection API users know.

TensorBoard shows `Loss/RPNLoss/objectness_loss`, `Loss/BoxClassifierLoss/mask_loss`,
`Loss/total_loss`, `learning_rate`, ... for training (Orbit adds `steps_per_second`), and
`DetectionBoxes_Precision/mAP`, `DetectionMasks_Precision/mAP@.50IOU`, ... for evaluation.
"""
from __future__ import annotations

from official.core import base_trainer

from models.task import LOSS_NAMES

_COCO_METRICS = {
    "AP": "Precision/mAP", "AP50": "Precision/mAP@.50IOU", "AP75": "Precision/mAP@.75IOU",
    "APs": "Precision/mAP (small)", "APm": "Precision/mAP (medium)",
    "APl": "Precision/mAP (large)", "ARmax1": "Recall/AR@1", "ARmax10": "Recall/AR@10",
    "ARmax100": "Recall/AR@100", "ARs": "Recall/AR@100 (small)",
    "ARm": "Recall/AR@100 (medium)", "ARl": "Recall/AR@100 (large)",
}
EVAL_NAMES = {**{k: f"DetectionBoxes_{v}" for k, v in _COCO_METRICS.items()},
              **{f"mask_{k}": f"DetectionMasks_{v}" for k, v in _COCO_METRICS.items()}}


def rename_eval_metrics(logs: dict) -> dict:
    """Model Garden's COCO metric names -> the OD API's (per-category names kept)."""
    renamed = {}
    for name, value in logs.items():
        if name == "validation_loss":
            continue
        renamed[EVAL_NAMES.get(name, name)] = value
    return renamed


class Trainer(base_trainer.Trainer):
    def train_loop_end(self) -> dict:
        logs = super().train_loop_end()
        renamed = {LOSS_NAMES.get(name, name): value for name, value in logs.items()
                   if name not in ("training_loss", "model_loss")}
        if "total_loss" in logs and "model_loss" in logs:
            renamed["Loss/regularization_loss"] = logs["total_loss"] - logs["model_loss"]
        return renamed

    def eval_end(self, aggregated_logs=None) -> dict:
        return rename_eval_metrics(super().eval_end(aggregated_logs))
