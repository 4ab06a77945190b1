"""TrainEvalPipelineConfig -> Model Garden ExperimentConfig, plus what Model Garden lacks.

`build_pipeline` is the one place where a pipeline.config becomes something trainable: the
Model Garden experiment (model, losses, data, optimizer, trainer) and the settings our task
adds on top (resizing, RPN targets, label maps). Errors carry field paths; `load_and_build`
turns them into messages that point at lines of the file.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Sequence

from official.core import config_definitions as cfg
from official.vision.configs import maskrcnn as mg

from models.builders import input_reader_builder, model_builder, optimizer_builder, stage_builder
from models.builders.stage_builder import Stage
from pipelines.config_util import PipelineConfig, PipelineConfigError, read_pipeline_config
from pipelines.errors import Problems
from pipelines.od_api import METRICS_SETS

# The OD API's eval_config.metrics_set names that we compute (COCO through Model Garden's
# evaluator; the Open Images challenge metric in models/evaluation/oid_challenge.py).
KNOWN_METRICS_SETS = METRICS_SETS


@dataclasses.dataclass
class BuiltPipeline:
    """Everything the training and evaluation drivers need from one pipeline.config."""

    pipeline: PipelineConfig
    experiment: cfg.ExperimentConfig
    resize: model_builder.ResizeSpec
    rpn_targets: model_builder.RpnTargets
    train_label_map_path: str
    eval_label_map_path: str
    sample_1_of_n_eval_examples: int
    metrics_sets: tuple[str, ...]
    stages: list[Stage]

    @property
    def task(self) -> mg.MaskRCNNTask:
        return self.experiment.task

    @property
    def num_classes(self) -> int:
        """Classes without the background, as in the config."""
        return self.pipeline.model.faster_rcnn.num_classes


def _metrics_sets(pipeline: PipelineConfig, include_mask: bool) -> tuple[str, ...]:
    sets = tuple(pipeline.eval_config.metrics_set) or (
        ("coco_detection_metrics", "coco_mask_metrics") if include_mask
        else ("coco_detection_metrics",))
    for name in sets:
        if name not in KNOWN_METRICS_SETS:
            raise PipelineConfigError(f"unknown metrics set {name!r}; known: "
                                      f"{', '.join(KNOWN_METRICS_SETS)}",
                                      "eval_config.metrics_set")
    for name in ("coco_mask_metrics", "oid_challenge_segmentation_metrics"):
        if name in sets and not include_mask:
            raise PipelineConfigError(f"{name} needs a model that predicts masks "
                                      "(number_of_stages: 3)", "eval_config.metrics_set")
    return sets


def build_pipeline(pipeline: PipelineConfig, checkpoint_every_n: int = 1000,
                   sample_1_of_n_eval_examples: int | None = None) -> BuiltPipeline:
    """Maps a parsed pipeline config onto Model Garden; raises one PipelineConfigError that
    lists every problem found."""
    if pipeline.model.WhichOneof("model") != "faster_rcnn":
        raise PipelineConfigError("needs faster_rcnn { ... } (Mask R-CNN)", "model")
    problems = Problems()
    faster_rcnn = pipeline.model.faster_rcnn
    train = pipeline.train_config
    stages, stage_rates = problems.value(stage_builder.build_stages, train, default=([], None))
    model = problems.value(model_builder.build_model_config, faster_rcnn, default=None)
    train_data = problems.value(input_reader_builder.build_data_config,
                                pipeline.train_input_reader, "train_input_reader",
                                train.batch_size, True, default=None)
    if len(pipeline.eval_input_reader) > 1:
        problems.add("only one eval_input_reader is supported", "eval_input_reader")
    eval_reader = pipeline.eval_input_reader[0] if pipeline.eval_input_reader else None
    validation_data = (problems.value(
        input_reader_builder.build_data_config, eval_reader, "eval_input_reader",
        pipeline.eval_config.batch_size or 1, False, default=None)
        if eval_reader is not None else mg.DataConfig(is_training=False))
    num_steps = int(train.num_steps)  # with stages, build_stages has set it to their sum
    if num_steps < 1 and not (train.stage and not stages):
        problems.add("must be at least 1 (or pass --num_train_steps)", "train_config.num_steps")
    optimization = problems.value(optimizer_builder.build_optimization_config, train.optimizer,
                                  train.gradient_clipping_by_norm, stage_rates, default=None)
    include_mask = faster_rcnn.number_of_stages == 3 and \
        faster_rcnn.second_stage_box_predictor.mask_rcnn_box_predictor.predict_instance_masks
    metrics_sets = problems.value(_metrics_sets, pipeline, include_mask, default=())
    resize = problems.value(model_builder.build_resize_spec, faster_rcnn, default=None)
    problems.raise_any()
    steps_per_loop = max(1, math.gcd(min(100, num_steps), checkpoint_every_n))
    task = mg.MaskRCNNTask(
        model=model,
        train_data=train_data,
        validation_data=validation_data,
        losses=model_builder.build_losses_config(faster_rcnn, train.weight_decay),
        init_checkpoint="",
        per_category_metrics=pipeline.eval_config.include_metrics_per_category,
    )
    trainer = cfg.TrainerConfig(
        train_steps=num_steps,
        steps_per_loop=steps_per_loop,
        summary_interval=steps_per_loop,
        checkpoint_interval=checkpoint_every_n,
        max_to_keep=train.checkpoint_max_to_keep,
        validation_steps=-1,
        optimizer_config=optimization)
    experiment = cfg.ExperimentConfig(
        task=task, trainer=trainer,
        runtime=cfg.RuntimeConfig(mixed_precision_dtype="float32", enable_xla=False))
    sample = sample_1_of_n_eval_examples or (
        eval_reader.sample_1_of_n_examples if eval_reader is not None else 1)
    return BuiltPipeline(
        pipeline=pipeline,
        experiment=experiment,
        resize=resize,
        rpn_targets=model_builder.build_rpn_targets(faster_rcnn),
        train_label_map_path=pipeline.train_input_reader.label_map_path,
        eval_label_map_path=eval_reader.label_map_path if eval_reader is not None else "",
        sample_1_of_n_eval_examples=sample,
        metrics_sets=metrics_sets,
        stages=stages,
    )


def load_and_build(path: str | Path, overrides: Sequence[str] = (),
                   num_train_steps: int | None = None, checkpoint_every_n: int = 1000,
                   sample_1_of_n_eval_examples: int | None = None) -> BuiltPipeline:
    """Reads, overrides and builds a pipeline config (an OD API config is translated first,
    with its warning); every problem of the file is raised at once, pointing at its line."""
    loaded = read_pipeline_config(path, overrides)
    problems = list(loaded.problems)
    if loaded.config is not None:
        pipeline = loaded.config
        if num_train_steps:
            pipeline.train_config.num_steps = num_train_steps
        try:
            built = build_pipeline(pipeline, checkpoint_every_n, sample_1_of_n_eval_examples)
        except PipelineConfigError as err:
            problems.append(err.located(loaded.source, loaded.text))
        else:
            if not problems:
                return built
    raise PipelineConfigError.combine(problems)
