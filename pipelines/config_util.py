"""Loading pipeline.config files: parse, apply overrides, and report errors with lines.

Unknown fields are parse errors (protobuf text format rejects them) that we reword to name
the message, the line and the valid field names. Semantic errors found later by the
builders (an unsupported backbone, a missing input path ...) carry the field path, and
`locate_field` finds its line in the file so the message can point at it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from google.protobuf import descriptor_pool, text_format

from core.atomic_io import write_text_atomic
from core.errors import UserError
from pipelines.protos import pipeline_pb2

PipelineConfig = pipeline_pb2.TrainEvalPipelineConfig
_PARSE_ERROR = re.compile(r"^(?P<line>\d+):(?P<col>\d+) : (?P<message>.*)$", re.S)
_NO_FIELD = re.compile(r'Message type "(?P<type>[\w.]+)" has no field named "(?P<field>\w+)"')


class PipelineConfigError(UserError, ValueError):
    """A pipeline config is malformed or asks for something this project does not do.

    `field` is the dotted path of the offending field (e.g. "train_config.batch_size");
    `detail` says what is wrong with it.
    """

    def __init__(self, detail: str, field: str = "", source: str = "", line: int | None = None):
        self.detail, self.field, self.source, self.line = detail, field, source, line
        where = source + (f":{line}" if line else "")
        super().__init__(": ".join(p for p in (where, field, detail) if p))

    def located(self, source: str, text: str) -> "PipelineConfigError":
        """The same error, pointing at the field's line in `text` when it can be found."""
        line = locate_field(text, self.field) if self.field else None
        return PipelineConfigError(self.detail, self.field, source, line)


def _reword_parse_error(err: text_format.ParseError, source: str) -> PipelineConfigError:
    match = _PARSE_ERROR.match(str(err))
    line = int(match["line"]) if match else None
    message = match["message"] if match else str(err)
    unknown = _NO_FIELD.search(message)
    if unknown:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(unknown["type"])
        valid = ", ".join(sorted(f.name for f in descriptor.fields))
        message = (f"unknown field '{unknown['field']}' in {descriptor.name} (this project "
                   f"does not support it or it is misspelt); valid fields: {valid}")
    return PipelineConfigError(message, source=source, line=line)


def parse_pipeline_config(text: str, source: str = "<pipeline config>") -> PipelineConfig:
    config = PipelineConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as err:
        raise _reword_parse_error(err, source) from None
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


def apply_overrides(config: PipelineConfig, overrides: Sequence[str]) -> PipelineConfig:
    """Applies text-format fragments, e.g. "train_config { batch_size: 4 }", to `config`."""
    for index, fragment in enumerate(overrides):
        patch = PipelineConfig()
        try:
            text_format.Parse(fragment, patch)
        except text_format.ParseError as err:
            raise _reword_parse_error(err, f"--config_override #{index + 1}") from None
        _override(config, patch)
    return config


def load_pipeline_config(path: str | Path, overrides: Sequence[str] = ()) -> PipelineConfig:
    """Reads a pipeline.config (protobuf text format) and applies overrides."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineConfigError(f"pipeline config {path} does not exist") from None
    return apply_overrides(parse_pipeline_config(text, str(path)), overrides)


def format_pipeline_config(config: PipelineConfig) -> str:
    return text_format.MessageToString(config, as_utf8=True)


def save_pipeline_config(config: PipelineConfig, path: str | Path) -> Path:
    """Writes the effective config (overrides applied), atomically."""
    return write_text_atomic(path, format_pipeline_config(config))


_TOKEN = re.compile(r'#[^\n]*|"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|[^\s{}<>:\[\],;#]+|[{}<>:\[\],;]')


def locate_field(text: str, field_path: str) -> int | None:
    """The 1-based line where `field_path` (dotted, e.g. "model.faster_rcnn.num_classes")
    is written in a text-format config; else the line of its deepest written ancestor."""
    wanted = field_path.split(".")
    stack: list[str] = []  # enclosing message field names
    name, best, after_colon, in_list = "", None, False, False
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token.startswith("#"):
            continue
        line = text.count("\n", 0, match.start()) + 1
        if in_list:
            in_list = token != "]"
        elif token in ("{", "<"):
            stack.append(name)
            after_colon = False
        elif token in ("}", ">"):
            if stack:
                stack.pop()
        elif token == ":":
            after_colon = True
        elif token == "[" and after_colon:
            in_list, after_colon = True, False
        elif token in (",", ";"):
            continue
        elif after_colon:
            after_colon = False  # a scalar value
        else:
            name = token
            path = stack + [name]
            if path == wanted:
                return line
            if path == wanted[:len(path)]:
                best = line
    return best
