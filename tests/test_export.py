"""exporter_main_v2.py on a model trained for two steps: the serving signature's outputs on an
image of another size, agreement with the restored Keras model under the evaluation
pipeline, every input type, saved_model_cli, mismatched checkpoints, and the all-or-nothing
output directory. Mask pasting and the staging directory are also tested on their own."""
from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import exclusive, run_command, run_shared_dir
from tests.training_helpers import make_tiny_records, model_main, tiny_config

NUM_CLASSES = 4  # the shapes config
OTHER_SIZE = (80, 112)  # trained at 64 x 64: another size and aspect ratio
OUTPUT_KEYS = {"detection_boxes", "detection_scores", "detection_classes", "num_detections",
               "detection_masks", "detection_masks_image"}


@dataclasses.dataclass(frozen=True)
class TinyExport:
    root: Path
    records: Path
    config: Path
    model_dir: Path
    exported: Path

    @property
    def saved_model(self) -> Path:
        return self.exported / "saved_model"


def tiny_export(tmp_path_factory) -> TinyExport:
    """Trains two steps and exports once per test run, whatever the number of test processes
    (test_infer.py and test_ensemble.py reuse it)."""
    shared = run_shared_dir(tmp_path_factory)
    with exclusive(shared / "tiny_export.lock"):
        return _build_tiny_export(shared / "tiny_export")


def _build_tiny_export(root: Path) -> TinyExport:
    found = TinyExport(root, root / "records", root / "pipeline.config", root / "model",
                       root / "exported")
    if (root / "done").exists():
        return found
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    make_tiny_records(root)
    tiny_config(found.records, found.config, num_steps=2)
    model_main(f"--pipeline_config_path={found.config}", f"--model_dir={found.model_dir}",
               "--checkpoint_every_n=2")
    run_command("exporter_main_v2.py", f"--pipeline_config_path={found.config}",
                f"--trained_checkpoint_dir={found.model_dir}",
                f"--output_directory={found.exported}", check=True)
    (root / "done").touch()
    return found


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> TinyExport:
    return tiny_export(tmp_path_factory)


def val_image(export: TinyExport, size: tuple[int, int] | None = None) -> np.ndarray:
    from PIL import Image

    path = sorted((export.root / "shapes/images/val").glob("*"))[0]
    image = Image.open(path).convert("RGB")
    if size is not None:
        image = image.resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(image)


def serve(saved_model: Path, value) -> dict[str, np.ndarray]:
    import tensorflow as tf

    function = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    return {k: v.numpy() for k, v in function(input_tensor=tf.constant(value)).items()}


def assert_valid_outputs(outputs: dict, height: int, width: int) -> None:
    count = int(outputs["num_detections"][0])
    slots = outputs["detection_scores"].shape[1]
    assert 0 < count <= slots
    boxes, classes = outputs["detection_boxes"][0], outputs["detection_classes"][0]
    assert boxes.dtype == np.float32 and classes.dtype == np.float32
    assert np.all((boxes >= 0) & (boxes <= 1))
    assert np.all(boxes[:count, :2] <= boxes[:count, 2:])  # ymin <= ymax, xmin <= xmax
    assert set(np.unique(classes[:count])) <= set(range(1, NUM_CLASSES + 1))
    assert np.all(outputs["detection_scores"][0, count:] == 0) and np.all(classes[count:] == 0)
    masks = outputs["detection_masks"][0]
    assert masks.shape[0] == slots and np.all((masks >= 0) & (masks <= 1))
    image_masks = outputs["detection_masks_image"][0]
    assert image_masks.shape == (slots, height, width) and image_masks.dtype == np.uint8
    assert set(np.unique(image_masks)) <= {0, 1}
    assert image_masks[:count].any() and not image_masks[count:].any()
    for box, mask in zip(boxes[:count] * [height, width, height, width], image_masks[:count]):
        ys, xs = np.nonzero(mask)
        if len(ys):  # pixel centres inside the box, allowing a pixel
            assert ys.min() + 0.5 >= box[0] - 1 and ys.max() + 0.5 <= box[2] + 1
            assert xs.min() + 0.5 >= box[1] - 1 and xs.max() + 0.5 <= box[3] + 1


# --- without a model ----------------------------------------------------------------------

def test_paste_masks_fills_exactly_the_pixels_whose_centre_is_in_the_box():
    import tensorflow as tf

    from models.ops.paste_masks import paste_masks

    full = np.ones((1, 28, 28), np.float32)
    left_half = np.zeros((1, 28, 28), np.float32)
    left_half[:, :, :14] = 1.0
    boxes = tf.constant([[2.2, 3.0, 9.7, 15.4]], tf.float32)  # ymin, xmin, ymax, xmax (pixels)
    pasted = paste_masks(tf.constant(full), boxes, 12, 20).numpy()[0]
    centres_y, centres_x = np.arange(12) + 0.5, np.arange(20) + 0.5
    expected = ((centres_y >= 2.2) & (centres_y < 9.7))[:, None] & \
        ((centres_x >= 3.0) & (centres_x < 15.4))[None, :]
    assert pasted.dtype == np.uint8 and np.array_equal(pasted, expected.astype(np.uint8))
    half = paste_masks(tf.constant(left_half), boxes, 12, 20).numpy()[0]
    assert np.array_equal(np.nonzero(half.any(axis=0))[0], np.arange(3, 9))  # x centres < 9.2
    # a box between pixel centres, one leaving the image, and no box at all
    odd = paste_masks(tf.constant(np.ones((4, 28, 28), np.float32)),
                      tf.constant([[3.6, 2.0, 4.4, 9.0], [-3.0, 15.0, 14.0, 26.0],
                                   [12.0, 2.0, 12.0, 9.0], [3.0, 20.0, 5.0, 20.0]]), 12, 20)
    assert not odd[0].numpy().any() and not odd[2:].numpy().any()  # no pixel centre inside
    assert np.array_equal(odd[1].numpy(), np.pad(np.ones((12, 5), np.uint8), [(0, 0), (15, 0)]))
    assert paste_masks(tf.zeros([0, 28, 28]), tf.zeros([0, 4]), 12, 20).shape == (0, 12, 20)


def test_staged_directory_is_all_or_nothing_and_never_replaces_foreign_files(tmp_path):
    from core.atomic_io import staged_directory
    from core.errors import OutputError

    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_directory(target, "saved_model") as staging:
            (staging / "saved_model").mkdir()
            raise RuntimeError("export failed")
    assert list(tmp_path.iterdir()) == []  # neither the target nor a staging directory
    with staged_directory(target, "saved_model") as staging:
        (staging / "saved_model").mkdir()
        (staging / "first").touch()
    with staged_directory(target, "saved_model") as staging:  # a previous export: replaced
        (staging / "saved_model").mkdir()
    assert sorted(p.name for p in target.iterdir()) == ["saved_model"]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(OutputError, match="not empty"):
        with staged_directory(foreign, "saved_model"):
            pass
    assert (foreign / "notes.txt").read_text() == "keep"


def test_restore_weights_takes_the_averages_training_kept_when_the_config_asks(tmp_path):
    """use_moving_average: export and diagnosis get the weights evaluation swaps in."""
    import tensorflow as tf
    import tf_keras
    from official.modeling.optimization.ema_optimizer import ExponentialMovingAverage

    from models.modeling.checkpoints import has_moving_averages, restore_weights

    def small_model() -> tf_keras.Model:
        model = tf_keras.Sequential([tf_keras.layers.Dense(3),
                                     tf_keras.layers.BatchNormalization()])
        model.build((None, 4))
        return model

    trained = small_model()
    # as Model Garden's trainer wraps the configured optimizer and checkpoints it
    optimizer = ExponentialMovingAverage(tf_keras.optimizers.legacy.Adam(0.1),
                                         average_decay=0.5, dynamic_decay=False)
    optimizer.shadow_copy(trained)
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum((trained(tf.ones([2, 4]), training=True) - 5.0) ** 2)
        weights = trained.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
    raw = [v.numpy() for v in trained.variables]
    averages = [optimizer.get_slot(v, "average").numpy() for v in trained.trainable_variables]
    with_averages = tf.train.Checkpoint(model=trained, optimizer=optimizer).write(
        str(tmp_path / "trained/ckpt-3"))
    without = tf.train.Checkpoint(model=trained).write(str(tmp_path / "exported/ckpt-0"))
    assert has_moving_averages(with_averages) and not has_moving_averages(without)
    assert not np.allclose(averages[0], raw[0])

    averaged = small_model()
    assert restore_weights(averaged, with_averages, use_moving_averages=True)
    for variable, average in zip(averaged.trainable_variables, averages, strict=True):
        np.testing.assert_allclose(variable.numpy(), average)
    # batch norm statistics are the trained ones, as in evaluation
    for variable, statistic in zip(averaged.non_trainable_variables,
                                   trained.non_trainable_variables, strict=True):
        np.testing.assert_allclose(variable.numpy(), statistic.numpy())
    for checkpoint, use in ((with_averages, False), (without, True)):
        last_step = small_model()
        assert not restore_weights(last_step, checkpoint, use_moving_averages=use)
        for variable, value in zip(last_step.variables, raw, strict=True):
            np.testing.assert_allclose(variable.numpy(), value)


# --- with a model trained for two steps ---------------------------------------------------

@pytest.mark.slow
def test_export_directory_layout(export):
    assert (export.saved_model / "saved_model.pb").exists()
    assert (export.exported / "checkpoint/ckpt-0.index").exists()
    assert "ckpt-0" in (export.exported / "checkpoint/checkpoint").read_text()
    assert "num_classes: 4" in (export.exported / "pipeline.config").read_text()
    assert (export.exported / "label_map.pbtxt").read_text() == \
        (export.records / "label_map.pbtxt").read_text()
    assert not [p for p in export.root.iterdir() if p.name.startswith(".exported.")]


@pytest.mark.slow
def test_serving_default_on_an_image_of_another_size(export):
    outputs = serve(export.saved_model, val_image(export, OTHER_SIZE)[np.newaxis])
    assert set(outputs) == OUTPUT_KEYS
    assert_valid_outputs(outputs, *OTHER_SIZE)


@pytest.mark.slow
def test_exported_detections_equal_the_restored_keras_model_under_evaluation(export):
    """The evaluation pipeline (our eval parser, Model Garden's model) and the SavedModel
    give the same detections for the same records."""
    import tensorflow as tf

    from models.builders.experiment_builder import load_and_build
    from models.tasks.maskrcnn_task import MaskRCNNTask

    built = load_and_build(export.config)
    task = MaskRCNNTask(built)
    model = task.build_model()
    tf.train.Checkpoint(model=model).read(
        tf.train.latest_checkpoint(str(export.model_dir))).expect_partial()
    images, labels = next(iter(task.build_inputs(built.task.validation_data)))
    info = labels["image_info"]
    outputs = model(images, image_shape=info[:, 1, :], anchor_boxes=labels["anchor_boxes"],
                    training=False)
    scale = tf.tile(info[:, 2:3, :], [1, 1, 2]) * tf.tile(info[:, 0:1, :], [1, 1, 2])
    keras_boxes = tf.clip_by_value(outputs["detection_boxes"] / scale, 0.0, 1.0).numpy()
    records = list(tf.data.TFRecordDataset(sorted(map(str, export.records.glob("val-*")))))
    for index in range(images.shape[0]):
        example = tf.io.parse_single_example(
            records[index], {"image/encoded": tf.io.FixedLenFeature([], tf.string)})
        image = tf.io.decode_image(example["image/encoded"], channels=3)
        served = serve(export.saved_model, image[tf.newaxis])
        count = int(outputs["num_detections"][index])
        assert int(served["num_detections"][0]) == count
        np.testing.assert_allclose(served["detection_scores"][0, :count],
                                   outputs["detection_scores"][index, :count], atol=1e-4)
        np.testing.assert_allclose(served["detection_boxes"][0, :count],
                                   keras_boxes[index, :count], atol=1e-4)
        np.testing.assert_array_equal(served["detection_classes"][0, :count],
                                      outputs["detection_classes"][index, :count])
        np.testing.assert_allclose(served["detection_masks"][0, :count],
                                   outputs["detection_masks"][index, :count], atol=1e-3)


@pytest.mark.slow
def test_every_input_type_gives_the_same_detections(export, tmp_path):
    import tensorflow as tf

    from models.builders.experiment_builder import load_and_build
    from models.serving.exporter import export_inference_graph
    from models.serving.saved_model_client import to_detections

    image = val_image(export, OTHER_SIZE)
    reference = serve(export.saved_model, image[np.newaxis])
    png = tf.io.encode_png(image).numpy()
    example = tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png]))}))
    inputs = {"encoded_image_string_tensor": np.array([png], object),
              "tf_example": np.array([example.SerializeToString()], object),
              "float_image_tensor": image[np.newaxis].astype(np.float32)}
    built = load_and_build(export.config)
    for input_type, value in inputs.items():
        full_masks = input_type != "float_image_tensor"  # also tests --nofull_image_masks
        target = export_inference_graph(built, export.model_dir, tmp_path / input_type,
                                        input_type, full_image_masks=full_masks,
                                        batch_size=None if full_masks else 1)
        outputs = serve(target / "saved_model", value)
        assert set(outputs) == (OUTPUT_KEYS if full_masks else
                                OUTPUT_KEYS - {"detection_masks_image"}), input_type
        for key in ("detection_boxes", "detection_scores", "detection_classes"):
            np.testing.assert_allclose(outputs[key], reference[key], atol=1e-4,
                                       err_msg=f"{input_type} {key}")
        if input_type == "encoded_image_string_tensor":  # exported for any batch size
            flipped = tf.io.encode_png(np.ascontiguousarray(image[:, ::-1])).numpy()
            both = serve(target / "saved_model", np.array([png, flipped], object))
            slots = reference["detection_scores"].shape[1]
            assert both["detection_masks_image"].shape == (2, slots, *OTHER_SIZE)
            np.testing.assert_allclose(both["detection_scores"][0],
                                       reference["detection_scores"][0], atol=1e-4)
            assert not np.allclose(both["detection_boxes"][1], both["detection_boxes"][0])
    # no detection at all: the outputs keep their shapes
    nothing = load_and_build(export.config, [
        "model { faster_rcnn { second_stage_post_processing { batch_non_max_suppression { "
        "score_threshold: 1.0 } } } }"])
    target = export_inference_graph(nothing, export.model_dir, tmp_path / "nothing")
    empty = serve(target / "saved_model", image[np.newaxis])
    assert empty["num_detections"][0] == 0 and not empty["detection_scores"].any()
    assert empty["detection_masks_image"].shape == (1, reference["detection_scores"].shape[1],
                                                    *OTHER_SIZE)
    assert not empty["detection_masks_image"].any()
    # without image-size masks, infer pastes the box masks itself, the same way
    pasted = to_detections(outputs, *OTHER_SIZE).masks
    served = to_detections(reference, *OTHER_SIZE).masks
    assert pasted.shape == served.shape and np.mean(pasted != served) < 0.002


@pytest.mark.slow
def test_saved_model_cli_show_and_run(export, tmp_path):
    cli = str(Path(sys.executable).parent / "saved_model_cli")
    shown = subprocess.run([cli, "show", "--dir", str(export.saved_model), "--all"],
                           capture_output=True, text=True, check=True).stdout
    assert "signature_def['serving_default']" in shown
    assert re.search(r"inputs\['input_tensor'\].*?dtype: DT_UINT8.*?shape: \(1, -1, -1, 3\)",
                     shown, re.S)
    for key in OUTPUT_KEYS:
        assert f"outputs['{key}']" in shown
    from PIL import Image

    Image.fromarray(val_image(export, OTHER_SIZE)).save(tmp_path / "image.png")
    run_command("-m", "models.tools.image_npy", str(tmp_path / "image.png"),
                str(tmp_path / "image.npy"), check=True)
    assert np.load(tmp_path / "image.npy").shape == (1, *OTHER_SIZE, 3)
    subprocess.run([cli, "run", "--dir", str(export.saved_model), "--tag_set", "serve",
                    "--signature_def", "serving_default",
                    "--inputs", f"input_tensor={tmp_path / 'image.npy'}",
                    "--outdir", str(tmp_path / "out")], capture_output=True, text=True,
                   check=True)
    outputs = {key: np.load(tmp_path / "out" / f"{key}.npy") for key in OUTPUT_KEYS}
    assert_valid_outputs(outputs, *OTHER_SIZE)
    shown = run_command("-m", "models.tools.show_outputs", str(tmp_path / "out"), "--label_map",
                        str(export.exported / "label_map.pbtxt"), check=True).stdout
    count = int(outputs["num_detections"][0])
    assert f"num_detections: {count}" in shown
    from records.label_map import read_label_map

    first = int(outputs["detection_classes"][0, 0])
    name = read_label_map(export.exported / "label_map.pbtxt").get(first).label
    assert f"0: {name} (class {first}) score {outputs['detection_scores'][0, 0]:.3f}" in shown
    assert "mask " in shown


@pytest.mark.slow
def test_a_checkpoint_of_other_num_classes_fails_naming_variables_and_writes_nothing(
        export, tmp_path):
    target = tmp_path / "exported"
    result = run_command("exporter_main_v2.py", f"--pipeline_config_path={export.config}",
                         f"--trained_checkpoint_dir={export.model_dir}",
                         f"--output_directory={target}",
                         "--config_override=model { faster_rcnn { num_classes: 6 } }")
    assert result.returncode == 1
    assert "does not match" in result.stderr and "num_classes 6" in result.stderr
    # the class logits: 4 + 1 outputs in the checkpoint, 6 + 1 in the config
    assert re.search(r"model/\S+: checkpoint \[\d+, 5\], model \[\d+, 7\]", result.stderr)
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no output directory, no staging directory


@pytest.mark.slow
def test_a_checkpoint_of_another_backbone_fails_naming_variables(export, tmp_path):
    from models.builders.experiment_builder import load_and_build
    from models.modeling.restore import CheckpointMismatchError
    from models.serving.exporter import export_inference_graph

    built = load_and_build(export.config, [
        'model { faster_rcnn { feature_extractor { type: "faster_rcnn_resnet34_fpn_keras" } } }'])
    with pytest.raises(CheckpointMismatchError) as error:
        export_inference_graph(built, export.model_dir, tmp_path / "exported")
    assert "faster_rcnn_resnet34_fpn_keras" in str(error.value)
    assert re.search(r"model/backbone/\S+", str(error.value))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_od_api_outputs_let_od_api_client_code_run_unchanged(export, tmp_path):
    """--od_api_outputs: the OD API's raw and per-detection outputs, consistent with each
    other and with the detections, and its class padding; the other outputs unchanged."""
    from models.builders.experiment_builder import load_and_build
    from models.serving.exporter import export_inference_graph
    from records.label_map import read_label_map

    image = val_image(export, OTHER_SIZE)
    reference = serve(export.saved_model, image[np.newaxis])
    # a score threshold between the 5th and 6th detection, so that some slots are padding
    threshold = float(reference["detection_scores"][0, 4:6].mean())
    built = load_and_build(export.config, [
        "model { faster_rcnn { second_stage_post_processing { batch_non_max_suppression { "
        f"score_threshold: {threshold} }} }} }} }}"])
    target = export_inference_graph(built, export.model_dir, tmp_path / "od_api",
                                    od_api_outputs=True)
    outputs = serve(target / "saved_model", image[np.newaxis])
    extra = {"raw_detection_boxes", "raw_detection_scores", "detection_multiclass_scores",
             "detection_anchor_indices"}
    assert set(outputs) == OUTPUT_KEYS | extra
    assert all(outputs[key].dtype == np.float32 for key in extra | {"detection_classes"})
    count = int(outputs["num_detections"][0])
    assert count == int(np.sum(reference["detection_scores"][0] > threshold))
    assert 0 < count < outputs["detection_scores"].shape[1]
    for key in OUTPUT_KEYS - {"num_detections"}:
        np.testing.assert_allclose(outputs[key][0, :count], reference[key][0, :count],
                                   atol=1e-5, err_msg=key)
    classes = outputs["detection_classes"][0]
    assert np.all(classes[count:] == 1.0)  # the OD API's padding: class 0 + its offset 1
    proposals = built.task.model.roi_generator.test_num_proposals
    raw_boxes, raw_scores = outputs["raw_detection_boxes"][0], outputs["raw_detection_scores"][0]
    assert raw_boxes.shape == (proposals, 4) and raw_scores.shape == (proposals, NUM_CLASSES + 1)
    assert np.all((raw_boxes >= 0) & (raw_boxes <= 1))
    np.testing.assert_allclose(raw_scores.sum(axis=-1), 1.0, atol=1e-4)  # softmax, background 0
    indices = outputs["detection_anchor_indices"][0]
    multiclass = outputs["detection_multiclass_scores"][0]
    assert multiclass.shape == (classes.shape[0], NUM_CLASSES + 1)
    assert not indices[count:].any() and not multiclass[count:].any()
    same_box = 0
    for i in range(count):
        proposal, label = int(indices[i]), int(classes[i])
        assert indices[i] == proposal and 0 <= proposal < proposals
        np.testing.assert_allclose(multiclass[i], raw_scores[proposal], atol=1e-6)
        # a detection is its proposal's box and score for its class
        np.testing.assert_allclose(multiclass[i, label], outputs["detection_scores"][0, i],
                                   atol=1e-5)
        if np.argmax(raw_scores[proposal, 1:]) + 1 == label:
            np.testing.assert_allclose(raw_boxes[proposal], outputs["detection_boxes"][0, i],
                                       atol=1e-5)
            same_box += 1
    assert same_box > 0
    # OD API client code, as its tutorials write it: a dictionary of the first detections and
    # a category index looked up for every slot, the padding included
    labels = read_label_map(target / "label_map.pbtxt")
    category_index = {item.id: {"id": item.id, "name": item.label} for item in labels.items}
    num_detections = int(outputs.pop("num_detections")[0])
    detections = {key: value[0, :num_detections] for key, value in outputs.items()}
    detections["detection_classes"] = detections["detection_classes"].astype(np.int64)
    assert [category_index[c]["name"] for c in outputs["detection_classes"][0].astype(int)]
    assert detections["detection_masks"].shape[0] == num_detections
