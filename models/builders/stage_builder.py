"""`train_config` (and its `stage` entries) -> the training stages: which variables each
trains, up to which step, and the learning rate of each stage when they set one.

The regexes match the readable variable paths of models/modeling/variable_paths.py
(`backbone/stage4/...`, `mask_head/...`); the presets are Matterport's staged fine-tuning
layer groups.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence

from pipelines.errors import PipelineConfigError

HEADS = r"^(decoder|rpn_head|detection_head|mask_head)/"
# trainable_layers preset -> the regexes of the variables it trains
PRESETS = {
    "heads": (HEADS,),
    "5+": (HEADS, r"^backbone/stage5/"),
    "4+": (HEADS, r"^backbone/stage[45]/"),
    "3+": (HEADS, r"^backbone/stage[345]/"),
    "all": (r".*",),
}


def trainable_patterns(preset: str, update: Sequence[str], freeze: Sequence[str],
                       field: str = "train_config") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(allow, deny) regexes: update_trainable_variables replace the preset when given."""
    if preset not in PRESETS:
        raise PipelineConfigError(f"unknown preset {preset!r}; choose from "
                                  f"{', '.join(PRESETS)}", f"{field}.trainable_layers")
    for name, patterns in (("update_trainable_variables", update),
                           ("freeze_variables", freeze)):
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as err:
                raise PipelineConfigError(f"{pattern!r} is not a regular expression ({err})",
                                          f"{field}.{name}") from None
    return (tuple(update) if update else PRESETS[preset]), tuple(freeze)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of training: up to `end_step`, training what allow/deny select."""

    name: str
    end_step: int
    allow: tuple[str, ...]
    deny: tuple[str, ...]


def build_stages(train) -> tuple[list[Stage], tuple[list[int], list[float]] | None]:
    """The training stages and, when they set learning rates, (ends, rates) for the schedule.

    Without `stage` entries the whole run is one stage shaped by the top-level
    trainable_layers / freeze_variables / update_trainable_variables.
    """
    def patterns(source, field):
        return trainable_patterns(source.trainable_layers, source.update_trainable_variables,
                                  source.freeze_variables, field)

    if not train.stage:
        return [Stage("all", int(train.num_steps), *patterns(train, "train_config"))], None
    if (train.trainable_layers != "all" or train.freeze_variables
            or train.update_trainable_variables):
        raise PipelineConfigError("with stages, set trainable_layers, freeze_variables and "
                                  "update_trainable_variables in each stage",
                                  "train_config.stage")
    stages, end = [], 0
    for index, stage in enumerate(train.stage):
        field = f"train_config.stage[{index}]"
        if stage.num_steps < 1:
            raise PipelineConfigError("needs num_steps of at least 1", f"{field}.num_steps")
        end += stage.num_steps
        stages.append(Stage(stage.name or f"stage {index + 1}", end, *patterns(stage, field)))
    if train.num_steps and train.num_steps != end:
        raise PipelineConfigError(f"is {train.num_steps} but the stages add up to {end} "
                                  "steps; leave it unset with stages", "train_config.num_steps")
    train.num_steps = end
    with_rate = [stage.HasField("learning_rate") for stage in train.stage]
    if any(with_rate) and not all(with_rate):
        raise PipelineConfigError("set learning_rate in every stage or in none (then the "
                                  "optimizer's schedule runs across the stages)",
                                  "train_config.stage")
    rates = ([s.end_step for s in stages], [st.learning_rate for st in train.stage]
             ) if all(with_rate) else None
    return stages, rates
