"""Model Garden's loss names -> the names Object Detection API users know from TensorBoard.

(Evaluation metrics are named where they are computed: models/evaluation/coco_metrics.py.)
"""
LOSS_NAMES = {
    "rpn_score_loss": "Loss/RPNLoss/objectness_loss",
    "rpn_box_loss": "Loss/RPNLoss/localization_loss",
    "frcnn_cls_loss": "Loss/BoxClassifierLoss/classification_loss",
    "frcnn_box_loss": "Loss/BoxClassifierLoss/localization_loss",
    "mask_loss": "Loss/BoxClassifierLoss/mask_loss",
    "total_loss": "Loss/total_loss",
}
REGULARIZATION_LOSS = "Loss/regularization_loss"
