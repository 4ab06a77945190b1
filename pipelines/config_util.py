"""Loading pipeline.config files: parse, apply overrides, read OD API configs, report errors
with lines.

Unknown fields are parse errors (protobuf text format rejects them) that we reword to name
the message, the line and the valid field names; parsing then goes on past the field, so one
run reports every problem of a file (one PipelineConfigError listing them). Semantic errors
found later by the builders carry the field path, and `PipelineConfigError.located` finds its
line in the file.

A file that sets fields only the Object Detection API can honour is read as an OD API config
(pipelines/od_api.py): translated into this project's meanings, with every field that has no
effect listed in one warning.
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
import re
from pathlib import Path
from typing import Sequence

from google.protobuf import descriptor_pool, text_format

from core.atomic_io import write_text_atomic
from pipelines import od_api, text_fields
from pipelines.errors import PipelineConfigError
from pipelines.protos import pipeline_pb2

__all__ = ["PipelineConfig", "PipelineConfigError", "LoadedConfig", "apply_overrides",
           "format_pipeline_config", "load_pipeline_config", "locate_field",
           "parse_pipeline_config", "read_pipeline_config", "save_pipeline_config"]

log = logging.getLogger(__name__)
PipelineConfig = pipeline_pb2.TrainEvalPipelineConfig
_PARSE_ERROR = re.compile(r"^(?P<line>\d+):(?P<col>\d+) : (?P<message>.*)$", re.S)
_NO_FIELD = re.compile(r'Message type "(?P<type>[\w.]+)" has no field named "(?P<field>\w+)"')
_NO_ENUM = re.compile(r'Enum type "(?P<type>[\w.]+)" has no value named (?P<value>\S+?)\.?$')
# Problems after which protobuf's parser can go on once the offending field is blanked out.
_RECOVERABLE = ("has no field named", "has no value named", "should not have multiple",
                "is specified along with field", "Couldn't parse", "Invalid value")
_MAX_PROBLEMS = 200


def _reword(message: str) -> str:
    unknown = _NO_FIELD.search(message)
    if unknown:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(unknown["type"])
        names = sorted(f.name for f in descriptor.fields)
        close = difflib.get_close_matches(unknown["field"], names, n=3, cutoff=0.75)
        hint = ("did you mean " + " or ".join(f"'{c}'" for c in close) + "?" if close
                else "valid fields: " + ", ".join(names))
        return (f"unknown field '{unknown['field']}' in {descriptor.name} (neither this "
                f"project nor the OD API has it); {hint}")
    enum = _NO_ENUM.search(message)
    if enum:
        descriptor = descriptor_pool.Default().FindEnumTypeByName(enum["type"])
        valid = ", ".join(v.name for v in descriptor.values)
        return f"unknown value {enum['value']} of {descriptor.name}; valid values: {valid}"
    return re.sub(r"^'[^']*': ", "", message)


def _parse_collecting(text: str, source: str) -> tuple[PipelineConfig | None,
                                                       list[PipelineConfigError]]:
    """Parses `text`, skipping each field protobuf refuses so that every problem is found.

    Returns the config (None when the file's syntax itself is broken) and the problems."""
    problems: list[PipelineConfigError] = []
    for _ in range(_MAX_PROBLEMS):
        config = PipelineConfig()
        try:
            text_format.Parse(text, config)
            return config, problems
        except text_format.ParseError as err:
            match = _PARSE_ERROR.match(str(err))
            message = match["message"] if match else str(err)
            line = int(match["line"]) if match else None
            problems.append(PipelineConfigError(_reword(message), source=source, line=line))
            entry = None
            if match and any(marker in message for marker in _RECOVERABLE):
                offset = text_fields.offset_of(text, int(match["line"]), int(match["col"]))
                entry = text_fields.entry_at(text_fields.scan(text), offset)
            if entry is None:
                return None, problems
            text = text_fields.blank(text, entry)
    return None, problems


def parse_pipeline_config(text: str, source: str = "<pipeline config>") -> PipelineConfig:
    """Parses a config as written (no OD API reading); raises every problem at once."""
    config, problems = _parse_collecting(text, source)
    if problems:
        raise PipelineConfigError.combine(problems)
    return config


def _override(target, source) -> None:
    """Sets every field `source` sets. Scalars and lists of scalars are replaced (so an
    overridden input_path replaces the configured ones); messages, and the elements of
    message lists (e.g. the first eval_input_reader), are patched field by field."""
    for field, value in source.ListFields():
        if field.is_repeated and field.type == field.TYPE_MESSAGE:
            existing = getattr(target, field.name)
            for index, element in enumerate(value):
                _override(existing[index] if index < len(existing) else existing.add(), element)
        elif field.is_repeated:
            target.ClearField(field.name)
            getattr(target, field.name).extend(value)
        elif field.type == field.TYPE_MESSAGE:
            child = getattr(target, field.name)
            child.SetInParent()  # selects this member if the field is part of a oneof
            _override(child, value)
        else:
            setattr(target, field.name, value)


def _apply_collecting(config: PipelineConfig, overrides: Sequence[str]
                      ) -> list[PipelineConfigError]:
    problems: list[PipelineConfigError] = []
    for index, fragment in enumerate(overrides):
        patch, found = _parse_collecting(fragment, f"--config_override #{index + 1}")
        problems += found
        if patch is not None:
            _override(config, patch)
    return problems


def apply_overrides(config: PipelineConfig, overrides: Sequence[str]) -> PipelineConfig:
    """Applies text-format fragments, e.g. "train_config { batch_size: 4 }", to `config`."""
    problems = _apply_collecting(config, overrides)
    if problems:
        raise PipelineConfigError.combine(problems)
    return config


@dataclasses.dataclass
class LoadedConfig:
    """A config file read with its overrides: the config in this project's meanings, the
    problems found (each located), and how an OD API config was read."""

    config: PipelineConfig | None  # None when the file's syntax is broken
    source: str
    text: str
    problems: list[PipelineConfigError]
    od_api: od_api.OdApiReading | None

    def raise_problems(self) -> None:
        if self.problems:
            raise PipelineConfigError.combine(self.problems)


def read_pipeline_config(path: str | Path, overrides: Sequence[str] = (),
                         substitute_backbones: bool = False, quiet: bool = False
                         ) -> LoadedConfig:
    """Reads a pipeline.config and applies overrides, collecting (not raising) the file's
    problems. An OD API config is translated (see pipelines/od_api.py) and its warning block
    logged unless `quiet`; `substitute_backbones` lets it name a backbone Model Garden lacks
    (the nearest ResNet is used, as pipelines/port_od_config.py does)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineConfigError(f"pipeline config {path} does not exist") from None
    source = str(path)
    config, problems = _parse_collecting(text, source)
    reading = None
    if config is not None:
        problems += _apply_collecting(config, overrides)
        config, reading = od_api.read_od_api(config, text, source, substitute_backbones)
        if reading is not None:
            problems += reading.errors
            if not quiet:
                log.warning("%s", reading.warning_text(source))
    return LoadedConfig(config, source, text, [p.located(source, text) for p in problems],
                        reading)


def load_pipeline_config(path: str | Path, overrides: Sequence[str] = ()) -> PipelineConfig:
    """Reads a pipeline.config (protobuf text format) and applies overrides; raises every
    problem of the file at once."""
    loaded = read_pipeline_config(path, overrides)
    loaded.raise_problems()
    return loaded.config


def format_pipeline_config(config: PipelineConfig) -> str:
    return text_format.MessageToString(config, as_utf8=True)


def save_pipeline_config(config: PipelineConfig, path: str | Path) -> Path:
    """Writes the effective config (overrides applied), atomically."""
    return write_text_atomic(path, format_pipeline_config(config))


def locate_field(text: str, field_path: str) -> int | None:
    """The 1-based line where `field_path` (dotted, e.g. "model.faster_rcnn.num_classes";
    "train_config.stage[1].num_steps" for the second stage) is written in a text-format
    config; else the line of its deepest written ancestor."""
    return text_fields.line_of(text_fields.scan(text), field_path)
