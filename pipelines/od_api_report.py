"""What reading an OD API config did, and the one warning block that tells the user.

Users switching from the Object Detection API need to see, in one place, what their config
means here: which meanings were translated, which OD API defaults were used, and every field
that has no effect with this engine, each with its line. The loader logs `warning_text` once
per file; `python -m pipelines.port_od_config` prints the same notes as its list of changes.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from google.protobuf import message as protobuf_message

from pipelines import text_fields
from pipelines.errors import PipelineConfigError

DOC = "docs/porting_from_od_api.md"


@dataclasses.dataclass
class Note:
    """One field of the file and what happens to it here."""

    field: str  # dotted path, e.g. "model.faster_rcnn.maxpool_stride"
    text: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.field}: {self.text}"


@dataclasses.dataclass
class OdApiReading:
    """How an OD API config was read: what made it one, and what changed."""

    triggers: list[Note] = dataclasses.field(default_factory=list)
    changes: list[Note] = dataclasses.field(default_factory=list)
    defaults: list[Note] = dataclasses.field(default_factory=list)
    no_effect: list[Note] = dataclasses.field(default_factory=list)
    errors: list[PipelineConfigError] = dataclasses.field(default_factory=list)

    def change(self, field: str, text: str) -> None:
        self.changes.append(Note(field, text))

    def default(self, field: str, value) -> None:
        self.defaults.append(Note(field, format_value(value)))

    def ignore(self, field: str, text: str) -> None:
        self.no_effect.append(Note(field, text))

    def error(self, field: str, detail: str) -> None:
        self.errors.append(PipelineConfigError(detail, field))

    def locate(self, text: str) -> None:
        """Gives every note the line its field is written on (None if it is not written)."""
        entries = text_fields.scan(text)
        for note in self.triggers:
            note.line = text_fields.line_of(entries, note.field, exact=True)
        for note in self.changes + self.no_effect:  # an unset field: its message's line
            note.line = text_fields.line_of(entries, note.field)
        for group in (self.changes, self.no_effect):
            group.sort(key=lambda n: (n.line or 0))

    def warning_text(self, source: str) -> str:
        """The one warning block (several lines) the loader logs for this file."""
        shown = ", ".join(f"{n.field}" + (f" (line {n.line})" if n.line else "")
                          for n in self.triggers[:3])
        more = len(self.triggers) - 3
        lines = [f"{source} is read as an Object Detection API config (it sets {shown}"
                 + (f" and {more} more fields only the OD API has" if more > 0 else "")
                 + f"): its fields keep the OD API's meanings and defaults ({DOC})"]
        if self.changes:
            lines.append("  translated for Model Garden:")
            lines += [f"    {note}" for note in self.changes]
        if self.defaults:
            lines.append("  the OD API's defaults, for fields the file leaves unset:")
            lines += [f"    {note}" for note in self.defaults]
        if self.no_effect:
            count = len(self.no_effect)
            lines.append(f"  {count} field{'s have' if count > 1 else ' has'} no effect with "
                         "this engine:")
            lines += [f"    {note}" for note in self.no_effect]
        return "\n".join(lines)

    def file_notes(self) -> list[tuple[str, Note]]:
        """("changed" or "left out", note) for the translated fields and the fields without
        an effect, in file order: what the port command lists."""
        tagged = [("changed", n) for n in self.changes] + \
            [("left out", n) for n in self.no_effect]
        return sorted(tagged, key=lambda pair: (pair[1].line is None, pair[1].line or 0))


def format_value(value) -> str:
    """A field value as it is written in a config (messages shortened to `{ ... }`)."""
    if isinstance(value, protobuf_message.Message):
        return "{ ... }"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, Sequence):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)
