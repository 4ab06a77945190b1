"""Readable variable paths, trainable-layer presets, and freezing by regex.

Model Garden's variable names do not say where a variable sits (a ResNet stage-4 kernel is
`residual_block_5/conv2d_1/kernel:0`), so regexes over them are hard to write. Every
variable gets a path from the model's structure instead:

    backbone/stem/...  backbone/stage2/... backbone/stage5/...  decoder/...
    rpn_head/...  detection_head/...  mask_head/...

`freeze_variables`, `update_trainable_variables` and the presets match these paths.

    python -m models.variables --pipeline_config_path=PIPELINE.config [--trainable_layers 4+]

prints them. Frozen layers are set non-trainable, so their batch normalization also runs in
inference mode, as Matterport's staged fine-tuning does.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from typing import Sequence

import tf_keras

HEADS = r"^(decoder|rpn_head|detection_head|mask_head)/"
PRESETS = {
    "heads": [HEADS],
    "5+": [HEADS, r"^backbone/stage5/"],
    "4+": [HEADS, r"^backbone/stage[45]/"],
    "3+": [HEADS, r"^backbone/stage[345]/"],
    "all": [r".*"],
}
_STAGE_MARKER = re.compile(r"^block_group_l(\d)(_\d+)?$")
_HEAD_PREFIX = re.compile(r"^(mask_rcnn_model(_\d+)?/)?(detection_head|mask_head|rpn_head)(_\d+)?/")
_COUNTER = re.compile(r"_\d+$")


class TrainableSelectionError(ValueError):
    """A preset or regex selects nothing, or is unknown."""


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


def trainable_patterns(preset: str, update: Sequence[str], freeze: Sequence[str]
                       ) -> tuple[list[str], list[str]]:
    """(allow, deny) regexes: update_trainable_variables replace the preset when given."""
    if preset not in PRESETS:
        raise TrainableSelectionError(f"unknown trainable_layers {preset!r}; choose from "
                                      f"{', '.join(PRESETS)}")
    return (list(update) if update else PRESETS[preset]), list(freeze)


def select_trainable(model: tf_keras.Model, allow: Sequence[str], deny: Sequence[str]
                     ) -> set:
    """refs of the variables to train: matching an allow regex and no deny regex."""
    allow_re = [re.compile(p) for p in allow]
    deny_re = [re.compile(p) for p in deny]
    paths = variable_paths(model)
    chosen = {v.ref() for v in _all_trainable(model)
              if any(p.search(paths[v.ref()]) for p in allow_re)
              and not any(p.search(paths[v.ref()]) for p in deny_re)}
    if not chosen:
        raise TrainableSelectionError(f"the trainable selection (allow {list(allow)}, deny "
                                      f"{list(deny)}) matches no variable")
    return chosen


def _all_trainable(model: tf_keras.Model) -> list:
    """Every variable that could be trained, whatever the layers' current trainable flags."""
    return [v for v in model.weights if v.trainable]


def _leaf_layers(model: tf_keras.Model):
    for module in model.submodules:
        if isinstance(module, tf_keras.layers.Layer) and getattr(module, "_trainable_weights",
                                                                  None):
            yield module


def apply_trainable(model: tf_keras.Model, chosen: set) -> None:
    """Sets each weight-owning layer trainable when any of its own weights is chosen.

    A frozen BatchNormalization layer then normalizes with its moving statistics and stops
    updating them, as in Matterport's fine-tuning of small data sets.
    """
    for layer in _leaf_layers(model):
        own = layer._trainable_weights + layer._non_trainable_weights  # pylint: disable=protected-access
        layer.trainable = any(v.ref() in chosen for v in own)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Lists the model's variable paths, which "
                                     "freeze_variables and update_trainable_variables match.")
    parser.add_argument("--pipeline_config_path", required=True)
    parser.add_argument("--trainable_layers", default="all", choices=sorted(PRESETS))
    args = parser.parse_args(argv)
    from models.builders.experiment_builder import load_and_build
    from models.task import MaskRCNNTask

    built = load_and_build(args.pipeline_config_path, checkpoint_every_n=1)
    model = MaskRCNNTask(built).build_model()
    paths = variable_paths(model)
    chosen = select_trainable(model, PRESETS[args.trainable_layers], [])
    for variable in model.weights:
        if variable.trainable:
            mark = "train" if variable.ref() in chosen else "     "
            print(f"{mark}  {paths[variable.ref()]:<70} {list(variable.shape)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
