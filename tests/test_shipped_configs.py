"""Every config shipped in pipelines/ parses, builds and trains for a step.

Only what points outside the repository is replaced (record paths, the label map and its
class count, the ImageNet checkpoint); each recipe's own architecture, input size,
augmentation and stages are kept. Batches shrink to one image so a CPU gets through.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from models.builders.experiment_builder import load_and_build
from models.training.strategy import choose_placement
from models.training.train_loop import train
from pipelines.config_util import load_pipeline_config
from tests.training_helpers import make_tiny_records, total_losses

pytestmark = pytest.mark.slow
CONFIGS = sorted((Path(__file__).resolve().parents[1] / "pipelines").glob("*.config"))


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    return make_tiny_records(tmp_path_factory.mktemp("shipped"), train_images=4, val_images=2)


def _overrides(config: Path, records: Path) -> list[str]:
    pipeline = load_pipeline_config(config)
    stages = " ".join("stage { num_steps: 1 }" for _ in pipeline.train_config.stage)
    steps = "" if stages else "num_steps: 1"
    return [
        "model { faster_rcnn { num_classes: 4 } }",
        f'train_config {{ batch_size: 1 {steps} {stages} fine_tune_checkpoint: "" }}',
        f'train_input_reader {{ label_map_path: "{records}/label_map.pbtxt" '
        f'tf_record_input_reader {{ input_path: "{records}/train-?????-of-00001.tfrecord" }} }}',
        f'eval_input_reader {{ label_map_path: "{records}/label_map.pbtxt" '
        f'tf_record_input_reader {{ input_path: "{records}/val-?????-of-00001.tfrecord" }} }}',
    ]


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_shipped_config_trains_a_step(config, records, tmp_path):
    built = load_and_build(config, _overrides(config, records), checkpoint_every_n=1)
    shipped = load_pipeline_config(config)
    assert built.pipeline.model.faster_rcnn.feature_extractor.type == \
        shipped.model.faster_rcnn.feature_extractor.type
    assert len(built.stages) == max(1, len(shipped.train_config.stage))
    # One step, of the first stage: a later stage only retraces with other variables, which
    # tests/test_fine_tuning.py covers on a small model.
    built.stages = built.stages[:1]
    built.experiment.trainer.train_steps = 1
    placement = choose_placement()
    result = train(built, str(tmp_path / "model"), placement, checkpoint_every_n=1)
    assert result["step"] == 1
    assert Path(result["checkpoint"] + ".index").exists()
    losses = total_losses(tmp_path / "model" / "train")
    assert losses and all(math.isfinite(v) for v in losses)
