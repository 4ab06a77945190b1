"""The training driver: Model Garden's trainer in an Orbit loop, with checkpoints that
resume where a killed job stopped, and a clear stop on a NaN or infinite loss."""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import orbit
import tensorflow as tf
from official.vision.ops.preprocess_ops import MEAN_RGB, STDDEV_RGB

from core.errors import UserError
from models.builders.experiment_builder import BuiltPipeline
from models.dataloaders.input_checks import check_label_map, check_records
from models.tasks.maskrcnn_task import NON_FINITE_MARKER, MaskRCNNTask
from models.tasks.trainer import Trainer, apply_precision, build_trainer
from models.training.strategy import ClusterError, Placement
from pipelines.config_util import save_pipeline_config
from records.tfrecord_io import CorruptRecordError, expand_paths, read_records

log = logging.getLogger(__name__)


class TrainingError(UserError, RuntimeError):
    """Training cannot go on (e.g. a loss became NaN); the message says where and why."""


def check_training_inputs(built: BuiltPipeline) -> None:
    check_label_map(built.train_label_map_path, built.num_classes, "train_input_reader")
    check_records(list(built.task.train_data.input_path), "train_input_reader",
                  built.num_classes, built.task.model.include_mask)


def _lost_peer(message: str) -> str:
    """'worker 1 (Connection reset by peer)' from TensorFlow's collective or coordination
    error text, as far as it tells."""
    peer = re.search(r"/job:(\w+)/replica:\d+/task:(\d+)", message)
    reason = re.search(r'grpc_message:"([^"]+)"', message)
    who = f"{peer[1]} {peer[2]}" if peer else "a worker"
    return f"{who} ({reason[1]})" if reason else who


def locate_corrupt_record(built: BuiltPipeline, err: tf.errors.DataLossError) -> str:
    """Which training file, record and byte is corrupt: TensorFlow's DataLossError names
    only an offset, so the configured files are read again, checking every record."""
    for path in expand_paths(list(built.task.train_data.input_path)):
        try:
            for _ in read_records(path):
                pass
        except CorruptRecordError as corrupt:
            return (f"{corrupt}; re-convert it, or remove it from "
                    "train_input_reader.tf_record_input_reader.input_path")
    return f"a training record could not be read ({err.message.splitlines()[0]})"


def _non_finite_loss(err: tf.errors.InvalidArgumentError) -> tuple[str, int] | None:
    """(loss name, step) of MaskRCNNTask.assert_finite's failure, if that is what failed."""
    match = re.search(re.escape(NON_FINITE_MARKER) + r"\] \[([^\]]+)\] \[at step\] \[(\d+)\]",
                      str(err))
    return (match.group(1), int(match.group(2))) if match else None


def write_input_summaries(trainer: Trainer, model_dir: str, max_images: int = 4) -> None:
    """One batch of training inputs, as the model sees them, with their boxes, to TensorBoard."""
    dataset = trainer.task.build_inputs(trainer.config.task.train_data)
    images, labels = next(iter(dataset))
    images = tf.cast(images, tf.float32) * STDDEV_RGB + MEAN_RGB
    height, width = images.shape[1], images.shape[2]
    boxes = labels["gt_boxes"] / [height, width, height, width]
    drawn = tf.image.draw_bounding_boxes(images / 255.0, tf.maximum(boxes, 0.0),
                                         colors=[[1.0, 1.0, 0.0, 1.0]])
    writer = tf.summary.create_file_writer(os.path.join(model_dir, "train"))
    with writer.as_default():
        tf.summary.image("train_input_images", drawn, step=trainer.global_step,
                         max_outputs=max_images)
    writer.close()


def _create_optimizer_slots(trainer: Trainer, placement: Placement) -> None:
    """Slots for every variable any stage may train, before the first step: a stage that
    unfreezes layers then finds their slots (and a resumed run restores them)."""
    variables = [v for v in trainer.model.weights if v.trainable]
    optimizer = trainer.optimizer
    with placement.strategy.scope():
        if hasattr(optimizer, "_create_all_weights"):  # Keras' legacy optimizers (Model Garden)
            optimizer._create_all_weights(variables)  # pylint: disable=protected-access
        else:
            optimizer.build(variables)


def _train_stages(built: BuiltPipeline, trainer: Trainer, controller: orbit.Controller,
                  start: int) -> None:
    """Runs each stage not yet finished, with the variables it trains."""
    begin = 0
    for stage in built.stages:
        if start < stage.end_step:
            trained, trainable = trainer.task.enter_stage(trainer.model, stage)
            trainer._train_loop_fn = None  # pylint: disable=protected-access  # retrace
            if len(built.stages) > 1:
                log.info("stage '%s': steps %d-%d, training %d of %d variables", stage.name,
                         max(begin, start) + 1, stage.end_step, trained, trainable)
            controller.train(steps=stage.end_step)
        begin = stage.end_step


def worker_checkpoint_path(model_dir: str, task: str) -> str:
    """Where a non-chief worker keeps its checkpoints: a temporary directory on its own
    machine, named after model_dir so that a killed run's is found by the next one."""
    key = hashlib.sha1(os.path.abspath(model_dir).encode()).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(),
                        f"maskrcnn-{key}-{task.replace(' ', '-')}-checkpoints")


def worker_checkpoint_dir(model_dir: str, placement: Placement) -> str:
    """The non-chief worker's checkpoint directory, cleared and starting with a copy of the
    chief's last checkpoint, so that every worker restores the same way."""
    path = worker_checkpoint_path(model_dir, placement.task)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    latest = tf.train.latest_checkpoint(model_dir)
    if latest:
        for source in tf.io.gfile.glob(latest + ".*"):
            tf.io.gfile.copy(source, os.path.join(path, os.path.basename(source)))
        name = os.path.basename(latest)  # the state file CheckpointManager reads
        with open(os.path.join(path, "checkpoint"), "w", encoding="utf-8") as f:
            f.write(f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n')
    return path


def train(built: BuiltPipeline, model_dir: str, placement: Placement,
          checkpoint_every_n: int = 1000, task: MaskRCNNTask | None = None,
          record_summaries: bool = False) -> dict:
    """Trains until train_config.num_steps, resuming from model_dir's last checkpoint.

    In a cluster (MultiWorkerMirroredStrategy) only the chief writes to model_dir; the other
    workers save their checkpoints, which saving needs every worker to take part in, to a
    temporary directory that is removed at the end (TensorFlow's rule), and write no
    summaries.
    """
    check_training_inputs(built)
    chief = placement.is_chief
    if chief:
        Path(model_dir).mkdir(parents=True, exist_ok=True)
        save_pipeline_config(built.pipeline, Path(model_dir) / "pipeline.config")
    write_dir = model_dir if chief else worker_checkpoint_dir(model_dir, placement)
    try:
        return _train(built, model_dir, write_dir, placement, checkpoint_every_n, task,
                      record_summaries and chief)
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
            tf.errors.CancelledError, tf.errors.AbortedError) as err:
        if placement.kind != "multi_worker":
            raise
        raise ClusterError(f"{placement.task}: training stopped because "
                           f"{_lost_peer(str(err))} of the cluster stopped answering (killed, "
                           "out of memory or unreachable); run the same command on every "
                           f"worker to resume from the last checkpoint in {model_dir}"
                           ) from None
    finally:
        if not chief:
            shutil.rmtree(write_dir, ignore_errors=True)


def _train(built: BuiltPipeline, model_dir: str, write_dir: str, placement: Placement,
           checkpoint_every_n: int, task: MaskRCNNTask | None, record_summaries: bool
           ) -> dict:
    apply_precision(built, placement.precision)
    trainer = build_trainer(built, model_dir, placement.strategy, train=True, evaluate=False,
                            task=task)
    trainer_config = built.experiment.trainer
    manager = tf.train.CheckpointManager(
        trainer.checkpoint, directory=write_dir, max_to_keep=trainer_config.max_to_keep,
        step_counter=trainer.global_step, checkpoint_interval=checkpoint_every_n,
        init_fn=trainer.initialize)
    controller = orbit.Controller(
        strategy=placement.strategy, trainer=trainer, global_step=trainer.global_step,
        steps_per_loop=trainer_config.steps_per_loop, checkpoint_manager=manager,
        summary_dir=os.path.join(model_dir, "train") if placement.is_chief else None,
        summary_interval=trainer_config.summary_interval)
    start = int(trainer.global_step.numpy())
    if start:
        log.info("resuming from %s at step %d", tf.train.latest_checkpoint(model_dir), start)
    _create_optimizer_slots(trainer, placement)
    try:
        if record_summaries and start < trainer_config.train_steps:
            write_input_summaries(trainer, model_dir)
        _train_stages(built, trainer, controller, start)
    except tf.errors.DataLossError as err:
        raise TrainingError(f"training stopped at step {int(trainer.global_step.numpy())}: "
                            f"{locate_corrupt_record(built, err)}") from None
    except tf.errors.InvalidArgumentError as err:
        found = _non_finite_loss(err)
        if found is None:
            raise
        loss, step = found
        latest = tf.train.latest_checkpoint(model_dir)
        raise TrainingError(
            f"training stopped at step {step}: {loss} is NaN "
            "or infinite. Lower the learning rate (or add gradient_clipping_by_norm) and "
            "train again; " + (f"the last good checkpoint is {latest}"
                               if latest else "no checkpoint was saved")
        ) from None
    return {"step": int(trainer.global_step.numpy()),
            "checkpoint": manager.latest_checkpoint if placement.is_chief else None}
