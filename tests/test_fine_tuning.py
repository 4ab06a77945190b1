"""Staged fine-tuning, fine-tune checkpoint types and repeat-factor sampling, on checkpoints
the tests train themselves."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from models.builders.experiment_builder import load_and_build
from models.dataloaders import repeat_factor_sampling as sampling
from models.modeling.fine_tune import FineTuneCheckpointError, initialize_from_checkpoint
from models.modeling.variable_paths import variable_paths
from models.tasks.maskrcnn_task import MaskRCNNTask
from records.example_codec import ImageExample, encode_example
from records.tfrecord_io import ShardedWriter
from tests.training_helpers import (
    SHAPES_CONFIG,
    make_tiny_records,
    model_main,
    tiny_config,
    tiny_overrides,
)

pytestmark = pytest.mark.slow
HEADS = ("decoder/", "rpn_head/", "detection_head/", "mask_head/")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("finetune")
    records = make_tiny_records(root, train_images=8, val_images=2)
    base = root / "base"
    model_main(f"--pipeline_config_path={tiny_config(records, root / 'base.config', 1)}",
               f"--model_dir={base}", "--checkpoint_every_n=1", "--norecord_summaries")
    return {"root": root, "records": records, "checkpoint": str(base / "ckpt-1")}


def _built(setup, *extra: str):
    return load_and_build(SHAPES_CONFIG, tiny_overrides(setup["records"]) + list(extra),
                          checkpoint_every_n=1)


def _values(built, checkpoint: str | None = None) -> tuple[dict, object]:
    model = MaskRCNNTask(built).build_model()
    if checkpoint:
        tf.train.Checkpoint(model=model).read(checkpoint).expect_partial()
    paths = variable_paths(model)
    return {paths[v.ref()]: v.numpy() for v in model.weights}, model


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not np.array_equal(before[k], after[k])}


def test_stages_train_heads_then_stage_4_and_up(setup):
    config = tiny_config(setup["records"], setup["root"] / "staged.config", extra=(
        "train_config { num_steps: 0 "
        f'fine_tune_checkpoint: "{setup["checkpoint"]}" fine_tune_checkpoint_type: "full" '
        'stage { name: "heads" num_steps: 2 learning_rate: 0.05 trainable_layers: "heads" } '
        'stage { name: "4+" num_steps: 2 learning_rate: 0.05 trainable_layers: "4+" } }',))
    model_dir = setup["root"] / "staged"
    result = model_main(f"--pipeline_config_path={config}", f"--model_dir={model_dir}",
                        "--checkpoint_every_n=2", "--norecord_summaries")
    assert "stage 'heads': steps 1-2" in result.stdout and "stage '4+': steps 3-4" in result.stdout
    built = _built(setup)
    start, _ = _values(built, setup["checkpoint"])
    after_heads, _ = _values(built, str(model_dir / "ckpt-2"))
    after_4plus, _ = _values(built, str(model_dir / "ckpt-4"))
    changed = _changed(start, after_heads)
    assert changed and all(k.startswith(HEADS) for k in changed)
    head_kernels = [k for k in start if k.startswith(HEADS) and k.endswith("kernel")]
    assert len(changed & set(head_kernels)) >= 0.9 * len(head_kernels)
    changed = _changed(after_heads, after_4plus)
    assert any(k.startswith("backbone/stage4/") for k in changed)
    assert any(k.startswith("backbone/stage5/") for k in changed)
    frozen = [k for k in start if k.startswith(("backbone/stem/", "backbone/stage2/",
                                                "backbone/stage3/"))]
    assert frozen and not changed & set(frozen)  # incl. batch-norm moving statistics


def test_detection_type_loads_all_but_the_class_sized_layers(setup):
    built = _built(setup, "model { faster_rcnn { num_classes: 3 } }",
                   f'train_config {{ fine_tune_checkpoint: "{setup["checkpoint"]}" }}')
    reference, _ = _values(_built(setup), setup["checkpoint"])  # the 4-class model
    model = MaskRCNNTask(built).build_model()
    message = initialize_from_checkpoint(model, built)
    paths = variable_paths(model)
    loaded = {paths[v.ref()]: v.numpy() for v in model.weights}
    skipped = [k for k in loaded if loaded[k].shape != reference[k].shape]
    assert sorted(skipped) == sorted(
        k for k in loaded if k.rsplit("/", 1)[0] in ("detection_head/detection-scores",
                                                     "detection_head/detection-boxes",
                                                     "mask_head/mask-logits"))
    assert f"except {len(skipped)} class-dependent" in message
    assert all(np.array_equal(loaded[k], reference[k]) for k in loaded if k not in skipped)


def test_classification_type_loads_the_backbone_only(setup):
    built = _built(setup, f'train_config {{ fine_tune_checkpoint: "{setup["checkpoint"]}" '
                          'fine_tune_checkpoint_type: "classification" }')
    reference, _ = _values(_built(setup), setup["checkpoint"])
    model = MaskRCNNTask(built).build_model()
    initialize_from_checkpoint(model, built)
    paths = variable_paths(model)
    loaded = {paths[v.ref()]: v.numpy() for v in model.weights}
    backbone = [k for k in loaded if k.startswith("backbone/")]
    assert backbone and all(np.array_equal(loaded[k], reference[k]) for k in backbone)
    heads = [k for k in loaded if k.startswith(HEADS) and k.endswith("kernel")]
    assert not any(np.array_equal(loaded[k], reference[k]) for k in heads)


@pytest.mark.parametrize("extra, kind, phrase", [
    ("model { faster_rcnn { num_classes: 3 } }", "full", "detection_head"),
    ('model { faster_rcnn { feature_extractor { type: "faster_rcnn_resnet34_fpn_keras" } } }',
     "classification", "in the model but not in the checkpoint"),
])
def test_a_mismatched_checkpoint_names_the_variables(setup, extra, kind, phrase):
    built = _built(setup, extra, f'train_config {{ fine_tune_checkpoint: "{setup["checkpoint"]}"'
                                 f' fine_tune_checkpoint_type: "{kind}" }}')
    model = MaskRCNNTask(built).build_model()
    with pytest.raises(FineTuneCheckpointError, match="variables that did not load") as info:
        initialize_from_checkpoint(model, built)
    assert phrase in str(info.value)


def test_missing_checkpoint_is_named(setup, tmp_path):
    built = _built(setup, f'train_config {{ fine_tune_checkpoint: "{tmp_path}/nope" }}')
    with pytest.raises(FineTuneCheckpointError, match="nope does not exist"):
        initialize_from_checkpoint(MaskRCNNTask(built).build_model(), built)


def test_repeat_factor_sampling_oversamples_rare_classes(tmp_path):
    with ShardedWriter(tmp_path, "train", 1) as writer:
        for index in range(20):
            labels = [1, 2] if index < 2 else [1]
            writer.write(encode_example(ImageExample(
                encoded_image=b"", image_format="png", height=4, width=4,
                source_id=str(index + 1), boxes=np.tile([[0, 0, 1, 1]], (len(labels), 1)),
                labels=np.array(labels), texts=["a"] * len(labels),
                areas=np.ones(len(labels)), is_crowd=np.zeros(len(labels)),
                masks_png=[b""] * len(labels))))
    factors = sampling.class_repeat_factors([str(writer.paths[0])], num_classes=2,
                                            threshold=0.4)
    np.testing.assert_allclose(factors, [1.0, 1.0, 2.0])  # sqrt(0.4 / 0.1) for the rare one
    dataset = sampling.repeat_by_factor(tf.data.TFRecordDataset, factors)(str(writer.paths[0]))
    ids = [tf.train.Example.FromString(r.numpy()).features.feature["image/source_id"]
           .bytes_list.value[0].decode() for r in dataset]
    assert len(ids) == 22 and ids.count("1") == ids.count("2") == 2
