"""Continuous evaluation: each new checkpoint in checkpoint_dir is scored with COCO box and
mask metrics (pycocotools, through Model Garden's evaluator) until none arrives for
--eval_timeout seconds or the last training step has been evaluated."""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import orbit
import tensorflow as tf

from core.atomic_io import write_json_atomic
from models.builders.experiment_builder import BuiltPipeline
from models.dataloaders.input_checks import check_label_map, check_records
from models.evaluation.coco_groundtruth import write_coco_groundtruth
from models.evaluation.eval_task import EvaluationTask
from models.tasks.trainer import Trainer, apply_precision, build_trainer
from models.training.strategy import Placement
from pipelines.config_util import PipelineConfigError

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.json"


def keep_requested_metrics(logs: dict, metrics_sets: tuple[str, ...]) -> dict:
    keep_boxes = "coco_detection_metrics" in metrics_sets
    keep_masks = "coco_mask_metrics" in metrics_sets
    return {name: float(np.asarray(value)) for name, value in logs.items()
            if np.asarray(value).size == 1
            and ((keep_masks and name.startswith("DetectionMasks"))
                 or (keep_boxes and name.startswith("DetectionBoxes"))
                 or not name.startswith("Detection"))}


def new_checkpoints(checkpoint_dir: str, timeout: float, poll_seconds: float = 1.0):
    """Yields each new latest checkpoint; stops after `timeout` seconds without one.

    (tf.train.checkpoints_iterator asks its timeout_fn after every checkpoint, not only
    after a timeout, so it cannot express "stop when none arrives for N seconds".)
    """
    last, waited_since = None, time.monotonic()
    while True:
        latest = tf.train.latest_checkpoint(checkpoint_dir)
        if latest is not None and latest != last:
            last = latest
            yield latest
            waited_since = time.monotonic()
        elif time.monotonic() - waited_since >= timeout:
            return
        else:
            time.sleep(poll_seconds)


def prepare_groundtruth(built: BuiltPipeline, eval_dir: Path) -> Path:
    """Checks the evaluation inputs and writes their COCO ground truth."""
    if not built.pipeline.eval_input_reader:
        raise PipelineConfigError("is missing: the pipeline config has nothing to evaluate "
                                  "on", "eval_input_reader")
    label_map = check_label_map(built.eval_label_map_path, built.num_classes,
                                "eval_input_reader")
    patterns = list(built.task.validation_data.input_path)
    check_records(patterns, "eval_input_reader", built.num_classes,
                  built.task.model.include_mask)
    return write_coco_groundtruth(eval_dir / "coco_groundtruth.json", patterns, label_map,
                                  built.num_classes, built.sample_1_of_n_eval_examples,
                                  built.task.model.include_mask)


def build_evaluator(built: BuiltPipeline, model_dir: str, eval_dir: Path, placement: Placement,
                    summaries: bool = True) -> tuple[Trainer, orbit.Controller]:
    """The evaluation trainer and its Orbit controller, after writing the COCO ground truth
    into eval_dir; summaries go to eval_dir unless summaries is False."""
    built.task.annotation_file = str(prepare_groundtruth(built, eval_dir))
    apply_precision(built, placement.precision)
    trainer = build_trainer(built, model_dir, placement.strategy, train=False, evaluate=True,
                            task=EvaluationTask(built, logging_dir=model_dir))
    controller = orbit.Controller(strategy=placement.strategy, evaluator=trainer,
                                  global_step=trainer.global_step,
                                  eval_summary_dir=os.fspath(eval_dir) if summaries else None)
    return trainer, controller


def evaluate_checkpoint(trainer: Trainer, controller: orbit.Controller, placement: Placement,
                        checkpoint: str, metrics_sets: tuple[str, ...]) -> tuple[int, dict]:
    """Restores `checkpoint` into the evaluation trainer; returns its step and metrics.

    In the strategy's scope, as Model Garden's train.py runs: with use_moving_average the
    trainer swaps the averages in, which needs it.
    """
    with placement.strategy.scope():
        trainer.checkpoint.read(checkpoint).expect_partial()
        step = int(trainer.global_step.numpy())
        return step, keep_requested_metrics(controller.evaluate(steps=-1), metrics_sets)


def evaluate_continuously(built: BuiltPipeline, model_dir: str, checkpoint_dir: str,
                          placement: Placement, eval_timeout: float = 3600) -> dict:
    """Evaluates checkpoints as they appear; returns {step: metrics} of this run."""
    eval_dir = Path(model_dir) / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    trainer, controller = build_evaluator(built, model_dir, eval_dir, placement)
    metrics_path = eval_dir / METRICS_FILE
    history = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    results: dict[int, dict] = {}
    final_step = built.experiment.trainer.train_steps
    for checkpoint in new_checkpoints(checkpoint_dir, eval_timeout):
        step, logs = evaluate_checkpoint(trainer, controller, placement, checkpoint,
                                         built.metrics_sets)
        results[step] = logs
        history[str(step)] = logs
        write_json_atomic(metrics_path, history)
        shown = {k: round(v, 4) for k, v in logs.items() if k.endswith("/mAP")}
        log.info("step %d: %s", step, shown)
        if step >= final_step:
            break
    if not results:
        log.warning("no checkpoint appeared in %s within %s s", checkpoint_dir, eval_timeout)
    return results
