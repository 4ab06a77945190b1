"""The code paths a GPU user gets, run on the CPU: float16 mixed precision with loss
scaling (when forced with --precision; a CPU trains in float32 unless told) and the training
step compiled with XLA (train_config { use_xla: true })."""
from __future__ import annotations

import numpy as np
import pytest

from tests.training_helpers import make_tiny_records, model_main, tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return make_tiny_records(tmp_path_factory.mktemp("gpu_paths"), train_images=4,
                             val_images=2)


def _variables(checkpoint) -> dict:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(checkpoint))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def test_float16_with_loss_scaling_trains_when_forced(records, tmp_path):
    config = tiny_config(records, tmp_path / "pipeline.config", num_steps=3)
    result = model_main(f"--pipeline_config_path={config}", f"--model_dir={tmp_path / 'm'}",
                        "--precision=float16", "--checkpoint_every_n=3")
    assert "strategy: cpu with 1 replica(s), float16" in result.stdout
    values = _variables(tmp_path / "m" / "ckpt-3")
    scale = [v for k, v in values.items() if "loss_scale/current_loss_scale" in k]
    assert scale and float(scale[0]) > 0  # a LossScaleOptimizer trained (dynamic scale)
    kernels = {k: v for k, v in values.items() if k.endswith("kernel/.ATTRIBUTES/VARIABLE_VALUE")}
    assert kernels and all(v.dtype == np.float32 for v in kernels.values())  # float32 weights
    assert all(np.isfinite(v).all() for v in kernels.values())
    # Without --precision the same config trains in float32 on a CPU.
    plain = model_main(f"--pipeline_config_path={config}", f"--model_dir={tmp_path / 'p'}",
                       "--num_train_steps=1")
    assert "strategy: cpu with 1 replica(s), float32" in plain.stdout


def test_the_xla_compiled_training_step_trains(records, tmp_path):
    config = tiny_config(records, tmp_path / "pipeline.config", num_steps=3,
                         extra=("train_config { use_xla: true }",))
    model_main(f"--pipeline_config_path={config}", f"--model_dir={tmp_path / 'x'}",
               "--checkpoint_every_n=3")  # a non-finite loss would stop it with an error
    values = _variables(tmp_path / "x" / "ckpt-3")
    kernels = [v for k, v in values.items() if k.endswith("kernel/.ATTRIBUTES/VARIABLE_VALUE")]
    assert kernels and all(np.isfinite(v).all() for v in kernels)
    assert int(values["optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE"]) == 3
