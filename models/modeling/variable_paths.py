"""Readable paths for every variable of a Model Garden Mask R-CNN.

Model Garden's variable names do not say where a variable sits (a ResNet stage-4 kernel is
`residual_block_5/conv2d_1/kernel:0`), so regexes over them are hard to write. Every
variable gets a path from the model's structure instead:

    backbone/stem/...  backbone/stage2/... backbone/stage5/...  decoder/...
    rpn_head/...  detection_head/...  mask_head/...

`freeze_variables`, `update_trainable_variables` and the trainable_layers presets match these
paths; `python -m models.tools.list_variables` prints them.
"""
from __future__ import annotations

import re
from collections import Counter

import tf_keras

_STAGE_MARKER = re.compile(r"^block_group_l(\d)(_\d+)?$")
_HEAD_PREFIX = re.compile(r"^(mask_rcnn_model(_\d+)?/)?(detection_head|mask_head|rpn_head)(_\d+)?/")
_COUNTER = re.compile(r"_\d+$")


def _short(name: str) -> str:
    return name[:-2] if name.endswith(":0") else name


def variable_paths(model: tf_keras.Model) -> dict:
    """variable.ref() -> readable path, for every variable of a Model Garden Mask R-CNN.

    Paths come from the model's structure, never from Keras' process-wide name counters
    (a second model in one process is `conv2d_53`, not `conv2d`): a backbone layer is named
    by its stage and its position among the stage's layers of its kind.
    """
    paths: dict = {}
    stage, seen = "stem", Counter()
    for layer in model.backbone.layers:
        marker = _STAGE_MARKER.match(layer.name)
        if marker:  # block_group_lN closes stage N; what follows belongs to the next one
            stage, seen = f"stage{int(marker.group(1)) + 1}", Counter()
            continue
        kind = _COUNTER.sub("", layer.name)
        if kind.endswith("_block"):  # residual_block / bottleneck_block: "block0", "block1"
            kind = "block"
            stage = "stage2" if stage == "stem" else stage
        name = f"{kind}{seen[kind]}" if kind == "block" else (
            f"{kind}_{seen[kind]}" if seen[kind] else kind)
        seen[kind] += 1
        for variable in layer.weights:
            inner = _short(variable.name)
            inner = inner[len(layer.name) + 1:] if inner.startswith(layer.name + "/") else inner
            paths[variable.ref()] = f"backbone/{stage}/{name}/{inner}"
    for attribute in ("decoder", "rpn_head", "detection_head", "mask_head"):
        part = getattr(model, attribute, None)
        parts = part if isinstance(part, (list, tuple)) else [part]
        for module in filter(None, parts):
            for variable in module.weights:
                name = _HEAD_PREFIX.sub("", _short(variable.name))
                paths.setdefault(variable.ref(), f"{attribute}/{name}")
    for variable in model.weights:  # anything else keeps its own name
        paths.setdefault(variable.ref(), _short(variable.name))
    return paths
