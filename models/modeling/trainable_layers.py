"""Training only some layers: the variables a stage selects, and freezing the rest.

A stage's allow / deny regexes (models/builders/stage_builder.py: trainable_layers presets,
update_trainable_variables, freeze_variables) are matched against the readable variable
paths of models/modeling/variable_paths.py. Frozen layers are set non-trainable, so their
batch normalization also runs in inference mode, as Matterport's staged fine-tuning does.
"""
from __future__ import annotations

import re
from typing import Sequence

import tf_keras

from core.errors import UserError
from models.modeling.variable_paths import variable_paths

HINT = ("python -m models.tools.list_variables --pipeline_config_path=PIPELINE.config lists "
        "the paths they match")


class TrainableSelectionError(UserError, ValueError):
    """A trainable selection (preset or regexes) matches no variable."""


def select_trainable(model: tf_keras.Model, allow: Sequence[str], deny: Sequence[str]
                     ) -> set:
    """refs of the variables to train: matching an allow regex and no deny regex.

    A regex that matches no variable at all is an error (a typo would otherwise silently
    train or freeze something else), and so is a selection that leaves nothing to train.
    """
    allow_re = [re.compile(p) for p in allow]
    deny_re = [re.compile(p) for p in deny]
    paths = variable_paths(model)
    candidates = [paths[v.ref()] for v in _all_trainable(model)]
    unmatched = [p.pattern for p in allow_re + deny_re
                 if not any(p.search(path) for path in candidates)]
    if unmatched:
        raise TrainableSelectionError(
            f"the regex(es) {unmatched} of the trainable selection match no variable of this "
            f"model ({HINT})")
    chosen = {v.ref() for v in _all_trainable(model)
              if any(p.search(paths[v.ref()]) for p in allow_re)
              and not any(p.search(paths[v.ref()]) for p in deny_re)}
    if not chosen:
        raise TrainableSelectionError(f"the trainable selection (allow {list(allow)}, deny "
                                      f"{list(deny)}) matches no variable ({HINT})")
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
