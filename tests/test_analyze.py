"""python -m models.tools.analyze and models/analysis: the COCO error breakdown, the
confusion matrix and the worst images on hand-made ground truth and detections whose
numbers are known, TensorBoard PR curves of continuous evaluation, every picture and the
HTML page, and the two input modes on the exported tiny model."""
from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from tests.conftest import run_command
from tests.test_export import TinyExport, tiny_export

SIZE = 100
CATEGORIES = [{"id": 1, "name": "cat", "supercategory": "animal"},
              {"id": 2, "name": "dog", "supercategory": "animal"},
              {"id": 3, "name": "car", "supercategory": "vehicle"}]
CAT, DOG, CAR = 1, 2, 3
ALL_RECALL_UP_TO_HALF = 51 / 101  # precision 1 at the recall points 0, .01, ..., .50


def _polygon(x: float, y: float, w: float, h: float) -> list[list[float]]:
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def ground_truth(objects: dict[int, list[tuple[int, list[float]]]]) -> dict:
    """{image id: [(class, [x, y, w, h]), ...]} -> COCO ground truth with box-shaped masks."""
    images, annotations = [], []
    for image_id, found in objects.items():
        images.append({"id": image_id, "width": SIZE, "height": SIZE,
                       "file_name": f"image_{image_id}.png"})
        for category, box in found:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": category, "bbox": box,
                                "area": box[2] * box[3], "iscrowd": 0,
                                "segmentation": _polygon(*box)})
    return {"images": images, "annotations": annotations, "categories": CATEGORIES}


def detection(image_id: int, category: int, box: list[float], score: float) -> dict:
    """A COCO result with a box and the mask filling it."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    x, y, w, h = (int(v) for v in box)
    mask[y:y + h, x:x + w] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"image_id": image_id, "category_id": category, "bbox": box, "score": score,
            "segmentation": {"size": [SIZE, SIZE], "counts": rle["counts"].decode()}}


def scored(truth: dict, results: list[dict]):
    """score_coco's evaluations of both IoU types."""
    from models.evaluation.coco_metrics import ground_truth_from_dict, score_coco

    coco = ground_truth_from_dict(truth)
    evaluations: dict = {}
    metrics = score_coco(coco, results, sorted(coco.getImgIds()), per_category=True,
                         evaluations=evaluations)
    return metrics, evaluations


def breakdown(truth: dict, results: list[dict], iou_type: str = "bbox") -> dict:
    from models.analysis.error_breakdown import error_breakdown

    _, evaluations = scored(truth, results)
    return error_breakdown(evaluations[iou_type],
                           {c["id"]: c["supercategory"] for c in CATEGORIES}).to_dict()


BOX = [10.0, 10.0, 40.0, 40.0]
OTHER_PLACE = [55.0, 55.0, 40.0, 40.0]


# --- the error breakdown --------------------------------------------------------------------

def test_a_missed_object_shows_as_FN():
    truth = ground_truth({1: [(CAT, BOX), (CAT, OTHER_PLACE)]})
    for iou_type in ("bbox", "segm"):
        cat = breakdown(truth, [detection(1, CAT, BOX, 0.9)], iou_type)["per_class"]["cat"]
        for kind in ("C75", "C50", "Loc", "Sim", "Oth", "BG"):
            assert cat[kind] == pytest.approx(ALL_RECALL_UP_TO_HALF, abs=1e-4), (iou_type, kind)
        assert cat["FN"] == 1.0  # the band BG..FN: half the recall never reached


def test_a_box_shifted_to_iou_0_6_counts_under_C50_not_C75():
    truth = ground_truth({1: [(CAT, BOX)]})
    shifted = [20.0, 10.0, 40.0, 40.0]  # overlap 30 x 40 = 1200, union 2000: IoU 0.6
    metrics, _ = scored(truth, [detection(1, CAT, shifted, 0.9)])
    assert metrics["DetectionBoxes_Precision/mAP@.75IOU"] == 0.0
    assert metrics["DetectionBoxes_Precision/mAP@.50IOU"] == pytest.approx(1.0)
    cat = breakdown(truth, [detection(1, CAT, shifted, 0.9)])["per_class"]["cat"]
    assert cat["C75"] == 0.0 and cat["C50"] == pytest.approx(1.0)
    far = [35.0, 10.0, 40.0, 40.0]  # overlap 15 x 40: IoU 600 / 2600 = 0.23: localization
    cat = breakdown(truth, [detection(1, CAT, far, 0.9)])["per_class"]["cat"]
    assert cat["C50"] == 0.0 and cat["Loc"] == pytest.approx(1.0)


def test_wrong_classes_count_as_Sim_within_a_supercategory_and_as_Oth_across():
    """A dog called on a cat is similar (both animals); a car called on a dog is other.
    Each wrong detection outscores the right one, so its class has precision 1/2."""
    truth = ground_truth({1: [(CAT, BOX)], 2: [(DOG, BOX)], 3: [(CAR, BOX)]})
    results = [detection(1, DOG, BOX, 0.9), detection(2, DOG, BOX, 0.8),
               detection(2, CAR, BOX, 0.95), detection(3, CAR, BOX, 0.7)]
    found = breakdown(truth, results)["per_class"]
    assert found["dog"]["Loc"] == pytest.approx(0.5) and found["dog"]["Sim"] == pytest.approx(1)
    assert found["car"]["Sim"] == pytest.approx(0.5) and found["car"]["Oth"] == pytest.approx(1)
    assert found["cat"]["BG"] == 0.0 and found["cat"]["FN"] == 1.0  # never found


def test_a_detection_on_nothing_is_BG():
    truth = ground_truth({1: [(CAT, BOX)]})
    results = [detection(1, CAT, OTHER_PLACE, 0.9), detection(1, CAT, BOX, 0.8)]
    cat = breakdown(truth, results)["per_class"]["cat"]
    assert cat["Oth"] == pytest.approx(0.5) and cat["BG"] == pytest.approx(1.0)


def test_overall_curves_leave_out_classes_without_ground_truth():
    truth = ground_truth({1: [(CAT, BOX)]})  # no dog, no car
    found = breakdown(truth, [detection(1, CAT, BOX, 0.9)])
    assert set(found["per_class"]) == {"cat"}
    assert found["overall"]["all"]["C75"] == pytest.approx(1.0)
    assert set(found["overall"]) == {"all", "medium"}  # 40 x 40 is medium


# --- confusion matrix and worst images -------------------------------------------------------

def test_confusion_matrix_and_worst_images():
    from models.analysis.matching import confusion_matrix, image_outcomes, worst_images

    truth = ground_truth({1: [(CAT, BOX)], 2: [(DOG, BOX)], 3: [(CAR, BOX)], 4: []})
    results = [detection(1, DOG, BOX, 0.9),  # a cat called dog
               detection(2, DOG, BOX, 0.8),  # right
               detection(2, DOG, [11.0, 10.0, 40.0, 40.0], 0.6),  # its duplicate
               detection(4, CAT, BOX, 0.7),  # on nothing
               detection(3, CAR, BOX, 0.3)]  # under the score threshold: the car is missed
    _, evaluations = scored(truth, results)
    matrix = confusion_matrix(evaluations["bbox"], 0.5)
    expected = np.zeros((4, 4), int)  # rows cat dog car background, columns ... missed
    expected[CAT - 1, DOG - 1] = 1
    expected[DOG - 1, DOG - 1] = 1
    expected[3, DOG - 1] = 1  # the duplicate
    expected[3, CAT - 1] = 1
    expected[CAR - 1, 3] = 1
    np.testing.assert_array_equal(matrix, expected)
    outcomes = image_outcomes(evaluations["bbox"], 0.5)
    assert [(o.true_positives, o.false_positives, o.false_negatives)
            for o in (outcomes[i] for i in (1, 2, 3, 4))] == [(0, 1, 1), (1, 1, 0), (0, 0, 1),
                                                              (0, 1, 0)]
    assert outcomes[2].f1 == pytest.approx(2 / 3)
    assert [o.image_id for o in worst_images(outcomes, 10)] == [1, 3, 4, 2]
    assert [o.image_id for o in worst_images(outcomes, 2)] == [1, 3]


# --- PR curves: the scorer's, and TensorBoard's during continuous evaluation ----------------

def test_precision_recall_curves_are_cocoevals_precision():
    from models.evaluation.coco_metrics import OVERALL, ground_truth_from_dict, precision_recall

    truth = ground_truth({1: [(CAT, BOX), (CAT, OTHER_PLACE)], 2: [(DOG, BOX)]})
    _, evaluations = scored(truth, [detection(1, CAT, BOX, 0.9), detection(2, DOG, BOX, 0.9)])
    curves = precision_recall(evaluations["bbox"], ground_truth_from_dict(truth), 0.5)
    by_name = {c.name: c for c in curves}
    assert list(by_name) == [OVERALL, "cat", "dog"]  # car has no ground truth
    assert by_name["cat"].positives == 2 and by_name[OVERALL].positives == 3
    assert by_name["cat"].average_precision == pytest.approx(ALL_RECALL_UP_TO_HALF)
    assert by_name["dog"].average_precision == pytest.approx(1.0)
    assert by_name[OVERALL].average_precision == pytest.approx((ALL_RECALL_UP_TO_HALF + 1) / 2)
    with pytest.raises(ValueError, match="not among"):
        precision_recall(evaluations["bbox"], ground_truth_from_dict(truth), 0.1)


def _pr_curve_events(event_dir: Path) -> dict[str, np.ndarray]:
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found = {}
    for path in event_dir.glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(path), size_guidance={"tensors": 0})
        accumulator.Reload()
        for tag in accumulator.PluginTagToContent("pr_curves"):
            (event,) = accumulator.Tensors(tag)
            found[tag] = (event.step, tf.make_ndarray(event.tensor_proto))
    return found


def test_continuous_evaluation_writes_the_scorers_pr_curves_to_tensorboard(tmp_path,
                                                                          monkeypatch):
    """CocoMetric keeps the curves of its evaluation; the evaluation task writes them with
    TensorBoard's pr_curve summary at the evaluated step."""
    import tensorflow as tf

    from models.evaluation import eval_task
    from models.evaluation.coco_metrics import CocoMetric
    from models.tasks.maskrcnn_task import MaskRCNNTask

    truth = ground_truth({1: [(CAT, BOX), (CAT, OTHER_PLACE)]})
    annotation_file = tmp_path / "gt.json"
    annotation_file.write_text(json.dumps(truth))
    metric = CocoMetric(str(annotation_file), include_mask=False)
    metric.update_state(None, {  # Model Garden's batch: one right box of the two cats
        "source_id": tf.constant([1]), "num_detections": tf.constant([1]),
        "image_info": tf.constant([[[SIZE, SIZE], [SIZE, SIZE], [1, 1], [0, 0]]], tf.float32),
        "detection_boxes": tf.constant([[[10, 10, 50, 50]]], tf.float32),
        "detection_classes": tf.constant([[CAT]]), "detection_scores": tf.constant([[0.9]])})
    metric.result()
    assert [eval_task.pr_curve_tag(c) for c in metric.curves] == [
        "DetectionBoxes_PrecisionRecall@.50IOU/overall",
        "DetectionBoxes_PrecisionRecall@.50IOU/cat",
        "DetectionBoxes_PrecisionRecall@.75IOU/overall",
        "DetectionBoxes_PrecisionRecall@.75IOU/cat"]

    class Visuals:
        def write_summaries(self, step):
            pass

    task = eval_task.EvaluationTask.__new__(eval_task.EvaluationTask)  # no model needed
    task.visuals, task.scorer = Visuals(), metric
    monkeypatch.setattr(MaskRCNNTask, "reduce_aggregated_logs", lambda *args, **kw: {})
    with tf.summary.create_file_writer(str(tmp_path / "eval")).as_default():
        task.reduce_aggregated_logs({}, global_step=7)
    events = _pr_curve_events(tmp_path / "eval")
    step, data = events["DetectionBoxes_PrecisionRecall@.50IOU/cat/pr_curves"]
    assert step == 7 and data.shape == (6, 101)
    true_positives, false_positives, _, false_negatives, precision, recall = data
    np.testing.assert_allclose(recall, np.linspace(0, 1, 101), atol=1e-6)
    np.testing.assert_allclose(precision, np.where(recall <= 0.5 + 1e-9, 1.0, 0.0))
    assert true_positives[50] == pytest.approx(1.0) and false_positives[50] == pytest.approx(0)
    assert false_negatives[50] == pytest.approx(1.0) and true_positives[100] == 0.0
    assert len(events) == 4


# --- the page and its pictures ----------------------------------------------------------------

PICTURE_KINDS = ("ap_per_class.png", "pr_bbox.png", "pr_segm.png", "errors_bbox.png",
                 "errors_bbox_per_class.png", "errors_segm.png", "errors_segm_per_class.png",
                 "ap_by_size.png", "confusion_bbox.png", "confusion_segm.png")


def assert_complete_page(out: Path, worst: int) -> dict:
    """Every picture kind decodes, the page links only files that exist; returns the JSON."""
    for name in PICTURE_KINDS:
        picture = cv2.imread(str(out / name))
        assert picture is not None and min(picture.shape[:2]) > 200, name
    drawn = sorted((out / "worst").glob("*.png"))
    assert len(drawn) == worst
    page = (out / "index.html").read_text()
    links = set(re.findall(r'(?:src|href)=["\']([^"\']+)["\']', page))
    assert links >= set(PICTURE_KINDS) | {"analysis.json"}
    assert all(not link.startswith(("/", "http")) and (out / link).is_file() for link in links)
    assert {p.relative_to(out).as_posix() for p in drawn} <= links
    return json.loads((out / "analysis.json").read_text())


def test_analysis_of_hand_made_results_draws_every_picture(tmp_path):
    from models.analysis.analyze import analyze_results
    from models.analysis.inputs import AnalysisInputs
    from models.evaluation.coco_metrics import ground_truth_from_dict

    truth = ground_truth({1: [(CAT, BOX), (CAT, OTHER_PLACE)], 2: [(DOG, BOX)],
                          3: [(CAR, [5.0, 5.0, 20.0, 20.0])]})
    results = [detection(1, CAT, BOX, 0.9), detection(2, CAT, BOX, 0.95),
               detection(3, CAR, [5.0, 5.0, 20.0, 20.0], 0.7)]
    gray = {i: np.full((SIZE, SIZE, 3), 90, np.uint8) for i in (1, 2, 3)}
    inputs = AnalysisInputs(ground_truth_from_dict(truth), results, [1, 2, 3],
                            lambda ids: {i: gray[i] for i in ids}, "hand-made",
                            {c["id"]: c["supercategory"] for c in CATEGORIES})
    report = analyze_results(inputs, tmp_path / "analysis", score_threshold=0.5, worst=5)
    summary = assert_complete_page(tmp_path / "analysis", worst=2)  # images 1 and 2 fail
    assert [w["image_id"] for w in summary["worst_images"]] == [2, 1]  # F1 0 before 2/3
    assert [o.image_id for o in report.worst] == [2, 1]
    assert summary["errors"]["bbox"]["per_class"]["dog"]["FN"] == 1.0
    cat = summary["errors"]["bbox"]["per_class"]["cat"]
    assert cat["C50"] == pytest.approx(ALL_RECALL_UP_TO_HALF / 2, abs=1e-4)  # FP first
    assert cat["Sim"] == pytest.approx(ALL_RECALL_UP_TO_HALF, abs=1e-4)  # a cat on the dog
    assert summary["confusion"]["bbox"]["counts"][DOG - 1][CAT - 1] == 1
    picture = cv2.imread(str(tmp_path / "analysis" / summary["worst_images"][0]["picture"]))
    assert picture.shape == (300, 2 * 300 + 8, 3)  # 100 px drawn 3x, prediction | truth
    assert (picture != 90).any(axis=-1).mean() > 0.05  # masks, boxes and captions drawn


def test_command_line_errors_are_one_line(tmp_path, capsys):
    from core.cli import run_main
    from models.tools.analyze import main

    with pytest.raises(SystemExit) as usage:
        main(["--detections", "d.json", "--output_dir", str(tmp_path / "out")])
    assert usage.value.code == 2 and "--detections needs --annotations" in capsys.readouterr().err
    (tmp_path / "gt.json").write_text(json.dumps(ground_truth({1: [(CAT, BOX)]})))
    (tmp_path / "d.json").write_text(json.dumps({"not": "a list"}))
    code = run_main(main, ["--detections", str(tmp_path / "d.json"), "--annotations",
                           str(tmp_path / "gt.json"), "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and "d.json: not COCO results" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


# --- the exported tiny model ------------------------------------------------------------------

@pytest.fixture(scope="module")
def export(tmp_path_factory) -> TinyExport:
    return tiny_export(tmp_path_factory)


@pytest.mark.slow
def test_tiny_model_on_records_then_its_results_file(export, tmp_path, capsys):
    """(b) the SavedModel on the val records; then (a) the detections it wrote, on the COCO
    annotations the records came from (with their supercategory), without the model."""
    from core.cli import run_main
    from models.tools.analyze import main

    from_records = tmp_path / "from_records"
    result = run_command("-m", "models.tools.analyze", "--saved_model",
                         str(export.saved_model), "--records",
                         str(export.records / "val-*.tfrecord"), "--output_dir",
                         str(from_records), "--score_threshold", "0.05", "--no_progress",
                         check=True)
    assert "index.html" in result.stdout
    images = sorted((export.root / "shapes/images/val").glob("*.jpg"))
    by_records = assert_complete_page(from_records, worst=len(images))  # all of them fail
    assert by_records["images"] == len(images) and by_records["detections"] > 0
    assert by_records["classes"] == ["circle", "square", "triangle", "star"]
    assert {"detections.json", "groundtruth.json"} <= {p.name for p in from_records.iterdir()}

    from_file = tmp_path / "from_file"
    assert run_main(main, ["--detections", str(from_records / "detections.json"),
                           "--annotations",
                           str(export.root / "shapes/annotations/instances_val.json"),
                           "--images_dir", str(export.root / "shapes/images/val"),
                           "--score_threshold", "0.05", "--output_dir", str(from_file)]) == 0
    assert "index.html" in capsys.readouterr().out
    by_file = assert_complete_page(from_file, worst=len(images))
    for name in ("DetectionBoxes_Precision/mAP", "DetectionBoxes_Precision/mAP@.50IOU"):
        assert by_file["metrics"][name] == pytest.approx(by_records["metrics"][name], abs=1e-6)
    assert by_file["confusion"] == by_records["confusion"]
    assert [w["file_name"] for w in by_file["worst_images"]] == [
        w["file_name"] for w in by_records["worst_images"]]
