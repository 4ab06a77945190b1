"""Reading Object Detection API configs: recognise one, translate it, report every field.

A file is an OD API config when it sets a field that only the OD API honours (one of
pipelines/od_api_fields.py's NO_EFFECT or TRANSLATED fields, any `*_hyperparams` block, an
augmentation this engine lacks). A value alone (say an OD API feature extractor name in an
otherwise native file) does not make one: the OD API's defaults would then change fields the
user never wrote; the builders' errors say what to write instead. Such a file is read with the OD API's meanings and defaults: `read_od_api` returns the config
rewritten into this engine's fields (pipelines/od_api_model.py for the model) with the OD
API-only fields removed, so it means the same when saved and read again, and an
OdApiReading listing what was translated and every field that has no effect here.
"""
from __future__ import annotations

from typing import Iterator

from google.protobuf import descriptor as protobuf_descriptor

from pipelines import od_api_fields, od_api_model
from pipelines.od_api_report import Note, OdApiReading, format_value
from pipelines.protos import pipeline_pb2

METRICS_SETS = ("coco_detection_metrics", "coco_mask_metrics",
                "oid_challenge_segmentation_metrics")
_FieldDescriptor = protobuf_descriptor.FieldDescriptor
_HONOURED_HYPERPARAMS = {"op", "regularizer"}


def _set_fields(message, path: str = "") -> Iterator[tuple[str, object, object, object]]:
    """(path, parent message, field descriptor, value) of every field set in `message`,
    depth first; elements of repeated messages get an index when there are several."""
    for field, value in message.ListFields():
        here = f"{path}.{field.name}" if path else field.name
        yield here, message, field, value
        if field.type != _FieldDescriptor.TYPE_MESSAGE or field.message_type.GetOptions(
                ).map_entry:
            continue
        if field.is_repeated:
            for index, element in enumerate(value):
                yield from _set_fields(element, f"{here}[{index}]" if len(value) > 1 else here)
        else:
            yield from _set_fields(value, here)


def _key(parent, field) -> tuple[str, str]:
    return parent.DESCRIPTOR.name, field.name


def _is_hyperparams(field) -> bool:
    return field.type == _FieldDescriptor.TYPE_MESSAGE and \
        field.message_type.name == "Hyperparams"


def _od_api_only(parent, field) -> bool:
    key = _key(parent, field)
    return (key in od_api_fields.NO_EFFECT or key in od_api_fields.TRANSLATED
            or _is_hyperparams(field)
            or (key[0] == "PreprocessingStep" and field.name not in od_api_fields.AUGMENTATIONS))


def _under(path: str, roots: list[str]) -> bool:
    return any(path.startswith(root + ".") for root in roots)


def recognise(config: pipeline_pb2.TrainEvalPipelineConfig) -> list[Note]:
    """The fields (outermost only) that make `config` an OD API config; empty if none."""
    triggers: list[Note] = []
    roots: list[str] = []
    for path, parent, field, _ in _set_fields(config):
        if _od_api_only(parent, field) and not _under(path, roots):
            roots.append(path)
            triggers.append(Note(path, ""))
    return triggers


def _value_text(field, value) -> str:
    if field.type == _FieldDescriptor.TYPE_ENUM:
        names = [field.enum_type.values_by_number[v].name for v in
                 (value if field.is_repeated else [value])]
        return ", ".join(names)
    return format_value(list(value) if field.is_repeated and field.type !=
                        _FieldDescriptor.TYPE_MESSAGE else value)


def _hyperparams_note(path: str, hyperparams, reading: OdApiReading) -> list[tuple[str, float]]:
    """Reports what a `*_hyperparams` block sets without effect; returns its L2 weights."""
    lost = []
    for field, value in hyperparams.ListFields():
        if field.name in _HONOURED_HYPERPARAMS or (field.name == "activation" and value == 1):
            continue
        lost.append(field.name)
    regularizer = hyperparams.regularizer
    if regularizer.HasField("l1_regularizer"):
        lost.append("regularizer.l1_regularizer")
    if lost:
        reading.ignore(path, f"{', '.join(lost)}: Model Garden builds these layers with its own "
                       "initializers, ReLU and normalization (only an l2_regularizer's weight "
                       "carries over, as weight decay)")
    if regularizer.HasField("l2_regularizer"):
        return [(path, regularizer.l2_regularizer.weight)]
    return []


def _report_fields(config, reading: OdApiReading) -> list[tuple[str, float]]:
    """Lists every OD API-only field without an effect; returns the L2 weights found."""
    weights: list[tuple[str, float]] = []
    skipped: list[str] = []  # blocks reported whole
    for path, parent, field, value in _set_fields(config):
        if _under(path, skipped):
            continue
        key = _key(parent, field)
        if _is_hyperparams(field):
            skipped.append(path)
            weights += _hyperparams_note(path, value, reading)
        elif key in od_api_fields.NO_EFFECT:
            rule = od_api_fields.NO_EFFECT[key]
            if field.type == _FieldDescriptor.TYPE_MESSAGE:
                skipped.append(path)
            if rule.honoured is None or not rule.honoured(value, parent):
                reading.ignore(path, f"{_value_text(field, value)}: {rule.reason}")
        elif key[0] == "PreprocessingStep" and field.name not in od_api_fields.AUGMENTATIONS:
            skipped.append(path)
            reading.ignore(path, od_api_fields.AUGMENTATION_REASON)
    return weights


def _weight_decay(config, weights: list[tuple[str, float]], reading: OdApiReading) -> None:
    train = config.train_config
    nonzero = sorted({w for _, w in weights if w > 0})
    if not nonzero:
        return
    listed = ", ".join(f"{path.rsplit('.', 1)[-1]} {w:g}" for path, w in weights)
    if train.HasField("weight_decay"):
        reading.change("train_config.weight_decay", f"{train.weight_decay:g} applies; the "
                       f"l2_regularizer weights ({listed}) are not used")
    elif train.HasField("add_regularization_loss") and not train.add_regularization_loss:
        reading.change("train_config.add_regularization_loss", "false: no weight decay (the "
                       f"l2_regularizer weights {listed} are not added to the loss)")
    else:
        train.weight_decay = nonzero[-1]
        spread = "" if len({w for _, w in weights}) == 1 else \
            f" (Model Garden has one weight decay; the file's weights: {listed})"
        heaviest = max(weights, key=lambda pair: pair[1])[0]
        reading.change(heaviest + ".regularizer.l2_regularizer.weight",
                       f"{nonzero[-1]:g} becomes train_config.weight_decay, which applies to "
                       f"every kernel, the backbone's too{spread}")


def _train(config, masks: bool, reading: OdApiReading) -> None:
    train = config.train_config
    if not train.HasField("fine_tune_checkpoint_type"):
        kind = "detection" if train.from_detection_checkpoint else "classification"
        train.fine_tune_checkpoint_type = kind
        if not train.HasField("from_detection_checkpoint") and train.fine_tune_checkpoint:
            reading.default("train_config.fine_tune_checkpoint_type", kind)
    elif train.HasField("from_detection_checkpoint") and \
            train.from_detection_checkpoint != (train.fine_tune_checkpoint_type == "detection"):
        reading.ignore("train_config.from_detection_checkpoint", "fine_tune_checkpoint_type "
                       f"'{train.fine_tune_checkpoint_type}' is set and decides")
    if train.fine_tune_checkpoint:
        backbone = config.model.faster_rcnn.feature_extractor.type.replace(
            "faster_rcnn_", "").replace("_fpn_keras", "")
        reading.change("train_config.fine_tune_checkpoint", "must be a TF2 checkpoint of "
                       f"Model Garden's model or backbone (for 'classification' a {backbone} "
                       "trained on ImageNet): the OD API's checkpoints hold other variables")
    frcnn = config.model.faster_rcnn
    reader = config.train_input_reader
    boxes = reader.max_number_of_boxes if reader.HasField("max_number_of_boxes") else (
        train.max_number_of_boxes if train.HasField("max_number_of_boxes") else None)
    if boxes is not None and not frcnn.HasField("max_num_instances"):
        frcnn.max_num_instances = boxes
    kept = [step for step in train.data_augmentation_options
            if step.WhichOneof("preprocessing_step") in od_api_fields.AUGMENTATIONS]
    del train.data_augmentation_options[:]
    train.data_augmentation_options.extend(kept)
    if train.HasField("optimizer"):
        optimizer = train.optimizer
        od_api_model._od_defaults(optimizer, "train_config.optimizer", reading)
        if optimizer.HasField("adam_optimizer"):
            od_api_model._od_defaults(optimizer.adam_optimizer,
                                      "train_config.optimizer.adam_optimizer", reading)
    if reader.HasField("num_epochs"):
        reading.ignore("train_input_reader.num_epochs", f"{reader.num_epochs}: training runs "
                       "train_config.num_steps steps, repeating the records as needed")


def _evaluation(config, masks: bool, reading: OdApiReading) -> None:
    evaluation = config.eval_config
    kept = []
    for index, name in enumerate(evaluation.metrics_set):
        if name in METRICS_SETS:
            kept.append(name)
        else:
            where = f"[{index}]" if len(evaluation.metrics_set) > 1 else ""
            reading.ignore(f"eval_config.metrics_set{where}", f'"{name}": not computed here '
                           f"(this engine's metrics: {', '.join(METRICS_SETS)})")
    del evaluation.metrics_set[:]
    evaluation.metrics_set.extend(kept)
    averages = config.train_config.optimizer.use_moving_average
    if evaluation.HasField("use_moving_averages") and evaluation.use_moving_averages != averages:
        reading.ignore("eval_config.use_moving_averages", (
            "true: training keeps no averages (train_config.optimizer.use_moving_average)"
            if evaluation.use_moving_averages else
            "false: evaluation scores the moving averages whenever training keeps them"))
    scores_masks = masks and (not kept or "coco_mask_metrics" in kept)
    if evaluation.HasField("eval_instance_masks") and evaluation.eval_instance_masks != \
            scores_masks:
        reading.ignore("eval_config.eval_instance_masks", (
            "false: mask mAP is computed whenever the model predicts masks and metrics_set "
            "asks for coco_mask_metrics (or is empty)") if scores_masks else (
            "true: no mask metrics (the model predicts no masks, or metrics_set leaves out "
            "coco_mask_metrics)"))
    for index, reader in enumerate(config.eval_input_reader):
        where = f"[{index}]" if len(config.eval_input_reader) > 1 else ""
        if reader.HasField("num_epochs") and reader.num_epochs != 1:
            reading.ignore(f"eval_input_reader{where}.num_epochs", f"{reader.num_epochs}: "
                           "evaluation reads each record once")
        boxes = config.model.faster_rcnn.max_num_instances
        if reader.HasField("max_number_of_boxes") and reader.max_number_of_boxes != boxes:
            reading.ignore(f"eval_input_reader{where}.max_number_of_boxes",
                           f"{reader.max_number_of_boxes}: training and evaluation keep the "
                           f"same {boxes} instances an image (model.faster_rcnn."
                           "max_num_instances)")


def _strip(config) -> None:
    """Clears every OD API-only field, so the config means the same when read again."""
    found = [(parent, field) for _, parent, field, _ in _set_fields(config)
             if _od_api_only(parent, field)]
    for parent, field in found:
        parent.ClearField(field.name)


def read_od_api(config: pipeline_pb2.TrainEvalPipelineConfig, text: str, source: str,
                substitute_backbones: bool = False
                ) -> tuple[pipeline_pb2.TrainEvalPipelineConfig, OdApiReading | None]:
    """(`config` in this engine's meanings, how it was read), or (config, None) when it is
    not an OD API config. Errors are in the reading's `errors`, with their field paths."""
    triggers = recognise(config)
    if not triggers:
        return config, None
    reading = OdApiReading(triggers=triggers)
    translated = pipeline_pb2.TrainEvalPipelineConfig()
    translated.CopyFrom(config)
    weights = _report_fields(translated, reading)
    masks = False
    if translated.model.HasField("faster_rcnn"):
        masks = od_api_model.translate_model(translated.model.faster_rcnn, reading,
                                             substitute_backbones)
    _weight_decay(translated, weights, reading)
    _train(translated, masks, reading)
    _evaluation(translated, masks, reading)
    _strip(translated)
    reading.locate(text)
    return translated, reading
