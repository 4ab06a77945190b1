"""Our Mask R-CNN task: Model Garden's, with our parser, eval sampling and loss checks.

Model Garden's task builds the model, the losses and the COCO evaluator; this subclass
adds what our pipeline configs promise and Model Garden lacks: the OD API resizers,
augmentations, evaluation on 1 of n examples, training only the variables a stage allows,
and a stop with the loss's name when a loss is NaN or infinite. Evaluation's additions
(our COCO scorer, the Open Images metric, eval pictures) are in
models/evaluation/eval_task.py.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional

import tensorflow as tf
import tf_keras
from official.common import dataset_fn as dataset_fn_lib
from official.vision.configs import maskrcnn as mg
from official.vision.dataloaders import input_reader, input_reader_factory, tf_example_decoder
from official.vision.tasks import maskrcnn as mg_task

from models.builders.experiment_builder import BuiltPipeline
from models.builders.stage_builder import Stage
from models.dataloaders import augmentations, repeat_factor_sampling
from models.dataloaders.parser import Parser
from models.modeling import trainable_layers
from models.modeling.fine_tune import initialize_from_checkpoint
from models.tasks.metric_names import LOSS_NAMES

log = logging.getLogger(__name__)

NON_FINITE_MARKER = "non-finite loss:"


class MaskRCNNTask(mg_task.MaskRCNNTask):
    """Model Garden's Mask R-CNN task configured from a BuiltPipeline."""

    def __init__(self, built: BuiltPipeline, logging_dir: str = ""):
        super().__init__(built.task, logging_dir=logging_dir)
        self.built = built
        train = built.pipeline.train_config
        self._augmentation, self._aug_scale_range = augmentations.build_augmentation(
            train.data_augmentation_options)
        self._trainable: Optional[set] = None  # refs of the variables the stage trains
        self._compute = (tf.function(self._losses_and_gradients, jit_compile=True)
                         if train.use_xla else self._losses_and_gradients)

    def initialize(self, model: tf_keras.Model) -> None:
        """Loads train_config.fine_tune_checkpoint when model_dir has no checkpoint yet."""
        if self.built.pipeline.train_config.fine_tune_checkpoint:
            log.info("%s", initialize_from_checkpoint(model, self.built))

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
        train_config = self.built.pipeline.train_config
        if params.is_training and train_config.HasField("repeat_factor_sampling"):
            factors = repeat_factor_sampling.class_repeat_factors(
                params.input_path, self.built.num_classes,
                train_config.repeat_factor_sampling.threshold)
            dataset_fn = repeat_factor_sampling.repeat_by_factor(dataset_fn, factors)
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
    def enter_stage(self, model: tf_keras.Model, stage: Stage) -> tuple[int, int]:
        """Trains only what `stage` selects from now on; returns (trained, trainable) counts.

        The caller must rebuild the traced train loop, which captured the variable list.
        """
        chosen = trainable_layers.select_trainable(model, stage.allow, stage.deny)
        trainable_layers.apply_trainable(model, chosen)
        self._trainable = chosen
        return len(chosen), len([v for v in model.weights if v.trainable])

    def trainable_variables(self, model: tf_keras.Model) -> list:
        trainable = model.trainable_variables
        if self._trainable is None:
            return trainable
        return [v for v in trainable if v.ref() in self._trainable]

    @staticmethod
    def assert_finite(losses: dict[str, tf.Tensor], step: tf.Tensor) -> None:
        """Fails the step, naming the first non-finite loss (components before totals) and
        the step (the optimizer's update count + 1, read before this step's update).

        Stateful ops on different variables are not ordered inside a tf.function, so the
        step comes from the optimizer, not from the trainer's step counter. The run stops
        before the controller saves a checkpoint: no NaN weight is ever written.
        """
        names = sorted(losses, key=lambda n: n in ("total_loss", "model_loss"))
        finite = tf.stack([tf.reduce_all(tf.math.is_finite(losses[n])) for n in names])
        first_bad = tf.gather(tf.constant([LOSS_NAMES.get(n, n) for n in names]),
                              tf.argmin(tf.cast(finite, tf.int32)))
        tf.debugging.Assert(tf.reduce_all(finite), [NON_FINITE_MARKER, first_bad, "at step",
                                                    step])

    def _losses_and_gradients(self, images, labels, model, optimizer, variables):
        """The forward pass, the losses and their gradients for `variables`: the part of a
        step that train_config.use_xla compiles with XLA (the checks and the update stay
        outside, where tf.debugging.Assert and the optimizer's slots run as they are)."""
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
        grads = tape.gradient(scaled_loss, variables)
        if isinstance(optimizer, tf_keras.mixed_precision.LossScaleOptimizer):
            grads = optimizer.get_unscaled_gradients(grads)
        return losses, grads

    def train_step(self, inputs: tuple[Any, Any], model, optimizer, metrics=None):
        """Model Garden's train step, on the variables the current stage trains."""
        images, labels = inputs
        variables = self.trainable_variables(model)
        step = tf.cast(optimizer.iterations, tf.int64) + 1
        losses, grads = self._compute(images, labels, model, optimizer, variables)
        self.assert_finite(losses, step)
        with tf.control_dependencies([tf.identity(losses["total_loss"])]):
            optimizer.apply_gradients(list(zip(grads, variables)))
        if metrics:
            for metric in metrics:
                metric.update_state(losses[metric.name])
        return {self.loss: losses["total_loss"]}
