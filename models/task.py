"""Our Mask R-CNN task: Model Garden's, with our parser, eval sampling and loss checks.

Model Garden's task builds the model, the losses and the COCO evaluator; this subclass
adds what our pipeline configs promise and Model Garden lacks: the OD API resizers,
augmentations, evaluation on 1 of n examples, training only the variables a stage allows,
and a stop with the loss's name when a loss is NaN or infinite.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Optional, Sequence

import tensorflow as tf
import tf_keras
from official.common import dataset_fn as dataset_fn_lib
from official.vision.configs import maskrcnn as mg
from official.vision.dataloaders import input_reader, input_reader_factory, tf_example_decoder
from official.vision.tasks import maskrcnn as mg_task

from models.builders.experiment_builder import BuiltPipeline
from models.inputs import Augmentation, Parser

# Model Garden's loss names -> the OD API's TensorBoard names, which our users know.
LOSS_NAMES = {
    "rpn_score_loss": "Loss/RPNLoss/objectness_loss",
    "rpn_box_loss": "Loss/RPNLoss/localization_loss",
    "frcnn_cls_loss": "Loss/BoxClassifierLoss/classification_loss",
    "frcnn_box_loss": "Loss/BoxClassifierLoss/localization_loss",
    "mask_loss": "Loss/BoxClassifierLoss/mask_loss",
    "total_loss": "Loss/total_loss",
}
NON_FINITE_MARKER = "non-finite loss: "


class MaskRCNNTask(mg_task.MaskRCNNTask):
    """Model Garden's Mask R-CNN task configured from a BuiltPipeline."""

    def __init__(self, built: BuiltPipeline, logging_dir: str = "",
                 augmentation: Optional[Augmentation] = None,
                 aug_scale_range: tuple[float, float] = (1.0, 1.0)):
        super().__init__(built.task, logging_dir=logging_dir)
        self.built = built
        self._augmentation = augmentation
        self._aug_scale_range = aug_scale_range
        self._trainable_patterns: Optional[Sequence[re.Pattern]] = None

    # --- inputs -------------------------------------------------------------------------
    def build_inputs(self, params: mg.DataConfig, input_context=None,
                     dataset_fn: Optional[Callable] = None) -> tf.data.Dataset:
        model = self.task_config.model
        decoder = tf_example_decoder.TfExampleDecoder(include_mask=model.include_mask)
        parser = Parser(
            resize=self.built.resize, rpn=self.built.rpn_targets, min_level=model.min_level,
            max_level=model.max_level, num_scales=model.anchor.num_scales,
            aspect_ratios=list(model.anchor.aspect_ratios),
            anchor_size=model.anchor.anchor_size, include_mask=model.include_mask,
            augmentation=self._augmentation if params.is_training else None,
            aug_scale_min=self._aug_scale_range[0], aug_scale_max=self._aug_scale_range[1],
            dtype=params.dtype)
        dataset_fn = dataset_fn or dataset_fn_lib.pick_dataset_fn(params.file_type)
        sample = self.built.sample_1_of_n_eval_examples
        if not params.is_training and sample > 1:
            base_fn = dataset_fn
            dataset_fn = lambda *args, **kwargs: base_fn(*args, **kwargs).shard(sample, 0)
        reader = input_reader_factory.input_reader_generator(
            params, dataset_fn=dataset_fn, decoder_fn=decoder.decode,
            combine_fn=input_reader.create_combine_fn(params),
            parser_fn=parser.parse_fn(params.is_training))
        return reader.read(input_context=input_context)

    # --- training -------------------------------------------------------------------------
    def set_trainable_patterns(self, patterns: Optional[Sequence[str]]) -> None:
        """Only variables whose name matches one of `patterns` are trained (None: all)."""
        self._trainable_patterns = (None if patterns is None
                                    else [re.compile(p) for p in patterns])

    def trainable_variables(self, model: tf_keras.Model) -> list:
        variables = model.trainable_variables
        if self._trainable_patterns is None:
            return variables
        return [v for v in variables if any(p.search(v.name) for p in self._trainable_patterns)]

    def build_losses(self, outputs, labels, aux_losses=None) -> dict[str, tf.Tensor]:
        losses = super().build_losses(outputs, labels, aux_losses)
        # Stop on the first NaN or infinite loss, naming it, before any weight is updated.
        return {name: tf.debugging.check_numerics(value, NON_FINITE_MARKER +
                                                  LOSS_NAMES.get(name, name))
                for name, value in losses.items()}

    def train_step(self, inputs: tuple[Any, Any], model, optimizer, metrics=None):
        """Model Garden's train step, on the variables the current stage trains."""
        images, labels = inputs
        num_replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            kwargs = {"image_shape": labels["image_info"][:, 1, :],
                      "anchor_boxes": labels["anchor_boxes"], "gt_boxes": labels["gt_boxes"],
                      "gt_classes": labels["gt_classes"], "training": True}
            if self.task_config.model.include_mask:
                kwargs["gt_masks"] = labels["gt_masks"]
            outputs = model(images, **kwargs)
            outputs = tf.nest.map_structure(lambda x: tf.cast(x, tf.float32), outputs)
            losses = self.build_losses(outputs=outputs, labels=labels, aux_losses=model.losses)
            scaled_loss = losses["total_loss"] / num_replicas
            if isinstance(optimizer, tf_keras.mixed_precision.LossScaleOptimizer):
                scaled_loss = optimizer.get_scaled_loss(scaled_loss)
        variables = self.trainable_variables(model)
        grads = tape.gradient(scaled_loss, variables)
        if isinstance(optimizer, tf_keras.mixed_precision.LossScaleOptimizer):
            grads = optimizer.get_unscaled_gradients(grads)
        optimizer.apply_gradients(list(zip(grads, variables)))
        if metrics:
            for metric in metrics:
                metric.update_state(losses[metric.name])
        return {self.loss: losses["total_loss"]}
