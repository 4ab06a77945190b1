"""model_main_tf2.py end to end on a tiny data set: training, summaries, checkpoints,
resume after a kill, two replicas, continuous evaluation, and the stops with a message."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from models.training.strategy import cpu_supports_bfloat16
from tests.conftest import REPO_ROOT
from tests.training_helpers import make_tiny_records, model_main, tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    return make_tiny_records(tmp_path_factory.mktemp("tiny"))


def _scalar_tags(event_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for path in event_dir.glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(path))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["tensors"]) | set(accumulator.Tags()["scalars"])
    return tags


def _eval_images(event_dir: Path) -> dict[str, tuple[int, int]]:
    """Image summary tag -> (height, width) of the PNG it holds."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sizes = {}
    for path in event_dir.glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(path), size_guidance={"tensors": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["tensors"]:
            for event in accumulator.Tensors(tag):
                values = event.tensor_proto.string_val
                if len(values) == 3 and values[2].startswith(b"\x89PNG"):
                    sizes[tag] = (int(values[1]), int(values[0]))  # stored as width, height
    return sizes


def _checkpoint_steps(model_dir: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1].split(".")[0]) for p in model_dir.glob("ckpt-*.index"))


def test_train_then_evaluate_writes_checkpoints_summaries_and_coco_metrics(records, tmp_path,
                                                                          caplog):
    """With weight averages kept (use_moving_average), which evaluation and export use."""
    config = tiny_config(records, tmp_path / "pipeline.config", num_steps=4,
                         extra=("train_config { checkpoint_max_to_keep: 1 optimizer { "
                                "use_moving_average: true moving_average_decay: 0.9 } }",
                                "eval_config { num_visualizations: 3 }"))
    model_dir = tmp_path / "model"
    result = model_main(f"--pipeline_config_path={config}", f"--model_dir={model_dir}",
                        "--checkpoint_every_n=2")
    assert "trained to step 4" in result.stdout and "tensorboard --logdir" in result.stdout
    assert _checkpoint_steps(model_dir) == [4]  # the last k=1 checkpoints are kept
    assert (model_dir / "pipeline.config").exists()
    train_tags = _scalar_tags(model_dir / "train")
    for tag in ("Loss/RPNLoss/objectness_loss", "Loss/RPNLoss/localization_loss",
                "Loss/BoxClassifierLoss/classification_loss",
                "Loss/BoxClassifierLoss/localization_loss", "Loss/BoxClassifierLoss/mask_loss",
                "Loss/total_loss", "learning_rate", "steps_per_second"):
        assert tag in train_tags, train_tags
    result = model_main(f"--pipeline_config_path={config}", f"--model_dir={model_dir}",
                        f"--checkpoint_dir={model_dir}", "--eval_timeout=1")
    metrics = json.loads((model_dir / "eval/metrics.json").read_text())
    assert list(metrics) == ["4"]
    assert {"DetectionBoxes_Precision/mAP", "DetectionMasks_Precision/mAP",
            "DetectionMasks_Precision/mAP@.50IOU"} <= set(metrics["4"])
    assert all(-1.0 <= v <= 1.0 for k, v in metrics["4"].items() if "Precision" in k)
    assert "DetectionMasks_Precision/mAP" in _scalar_tags(model_dir / "eval")
    # num_visualizations pictures: prediction | ground truth, 64 px images drawn 4x enlarged
    images = _eval_images(model_dir / "eval")
    assert set(images) == {f"eval_side_by_side_{i}" for i in range(3)}, images
    assert all(size == (256, 2 * 256 + 4) for size in images.values()), images
    with caplog.at_level(logging.INFO, logger="models"):
        _assert_export_takes_the_averages(config, model_dir / "ckpt-4", tmp_path)
    assert "using the moving averages of the weights" in caplog.text


def _assert_export_takes_the_averages(config: Path, checkpoint: Path, scratch: Path) -> None:
    """The exporter's weights are the ones Model Garden's trainer swaps in to evaluate."""
    import numpy as np

    from models.builders.experiment_builder import load_and_build
    from models.modeling.restore import restore_model
    from models.tasks.trainer import build_trainer
    from models.training.strategy import choose_placement

    built = load_and_build(config, [])
    placement = choose_placement()
    trainer = build_trainer(built, str(scratch), placement.strategy, train=True,
                            evaluate=False)
    with placement.strategy.scope():
        trainer.checkpoint.read(str(checkpoint)).expect_partial()
        last_step = [v.numpy() for v in trainer.model.trainable_variables]
        trainer.optimizer.swap_weights()
        averages = [v.numpy() for v in trainer.model.trainable_variables]
    model, _ = restore_model(built, checkpoint)  # what exporter_main_v2.py exports
    assert len(model.trainable_variables) == len(averages)
    for variable, average in zip(model.trainable_variables, averages):
        np.testing.assert_allclose(variable.numpy(), average, rtol=1e-6, atol=1e-7)
    assert sum(not np.allclose(a, b) for a, b in zip(last_step, averages)) > len(averages) // 2


def test_resume_after_a_kill_continues_at_the_last_checkpoint(records, tmp_path):
    config = tiny_config(records, tmp_path / "pipeline.config", num_steps=8)
    model_dir = tmp_path / "model"
    command = [sys.executable, "model_main_tf2.py", f"--pipeline_config_path={config}",
               f"--model_dir={model_dir}", "--checkpoint_every_n=2"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while not _checkpoint_steps(model_dir) and time.time() < deadline:
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = max(_checkpoint_steps(model_dir))
    assert 2 <= killed_at < 8
    first = (model_dir / f"ckpt-{killed_at}.index").stat().st_mtime
    result = model_main(*command[2:])
    assert f"resuming from {model_dir}/ckpt-{killed_at} at step {killed_at}" in result.stdout
    assert "trained to step 8" in result.stdout
    assert max(_checkpoint_steps(model_dir)) == 8
    assert (model_dir / f"ckpt-{killed_at}.index").stat().st_mtime == first  # not redone


def test_two_replica_mirrored_strategy_on_two_logical_cpus(records, tmp_path):
    config = tiny_config(records, tmp_path / "pipeline.config", num_steps=2)
    model_dir = tmp_path / "model"
    result = model_main(f"--pipeline_config_path={config}", f"--model_dir={model_dir}",
                        "--cpu_replicas=2", "--checkpoint_every_n=2")
    assert "strategy: cpu with 2 replica(s)" in result.stdout
    assert _checkpoint_steps(model_dir) == [2]


@pytest.mark.skipif(not cpu_supports_bfloat16(), reason="this CPU has no bfloat16 instructions")
def test_bfloat16_training_on_a_cpu_keeps_float32_weights(records, tmp_path):
    """use_bfloat16 computes in bfloat16 where the CPU can; the checkpoint still holds the
    float32 weights that evaluation, export and fine-tuning read."""
    import tensorflow as tf

    config = tiny_config(records, tmp_path / "pipeline.config", num_steps=2,
                         extra=("train_config { use_bfloat16: true }",))
    model_dir = tmp_path / "model"
    result = model_main(f"--pipeline_config_path={config}", f"--model_dir={model_dir}",
                        "--checkpoint_every_n=2")
    assert "strategy: cpu with 1 replica(s), bfloat16" in result.stdout
    dtypes = tf.train.load_checkpoint(str(model_dir / "ckpt-2")).get_variable_to_dtype_map()
    kernels = {name: dtype for name, dtype in dtypes.items() if "kernel/.ATTRIBUTES" in name}
    assert kernels and set(kernels.values()) == {tf.float32}


def test_a_non_finite_loss_stops_training_with_the_step_and_the_loss(records, tmp_path):
    config = tiny_config(records, tmp_path / "pipeline.config", num_steps=3,
                         extra=("model { faster_rcnn { first_stage_objectness_loss_weight: "
                                "inf } }",))
    result = model_main(f"--pipeline_config_path={config}", f"--model_dir={tmp_path / 'm'}",
                        check=False)
    assert result.returncode == 1
    assert "training stopped at step 1: Loss/total_loss is NaN or infinite" in result.stderr
    assert not list((tmp_path / "m").glob("ckpt-*.index"))  # nothing poisoned was saved


def test_continuous_evaluation_scores_checkpoints_as_they_appear(records, tmp_path):
    config = tiny_config(records, tmp_path / "pipeline.config", num_steps=4)
    model_dir = tmp_path / "model"
    evaluator = subprocess.Popen(
        [sys.executable, "model_main_tf2.py", f"--pipeline_config_path={config}",
         f"--model_dir={tmp_path / 'eval_job'}", f"--checkpoint_dir={model_dir}",
         "--eval_timeout=600"], cwd=REPO_ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        model_main(f"--pipeline_config_path={config}", f"--model_dir={model_dir}",
                   "--checkpoint_every_n=2")
        output, _ = evaluator.communicate(timeout=900)
    finally:
        evaluator.kill()
    assert evaluator.returncode == 0, output
    metrics = json.loads((tmp_path / "eval_job/eval/metrics.json").read_text())
    assert "4" in metrics  # the final checkpoint ends the evaluation job before its timeout
    assert "DetectionMasks_Precision/mAP" in metrics["4"]
