"""Where each field of a protobuf text-format file is written: name, line and extent.

The loader needs this three ways: to point an error at the line of the field it names, to
report every OD API field without an effect with its line (the n-th of a repeated field
included), and to skip a field protobuf refused so that parsing can go on and report every
problem of a file at once. Protobuf's own parser gives none of this, so this scanner reads
the same token grammar (comments, strings, `:` optional before a message, `{}` or `<>`,
`[...]` lists) without knowing the schema.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Iterable, Sequence

_TOKEN = re.compile(r'#[^\n]*|"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|'
                    r'[^\s{}<>:\[\],;#"\']+|[{}<>:\[\],;]')
_PATH_PART = re.compile(r"^(?P<name>[^\[\]]+)(?:\[(?P<index>\d+)\])?$")


@dataclasses.dataclass
class Entry:
    """One `name: value`, `name { ... }` or `name: [ ... ]` of the file."""

    name: str
    line: int  # 1-based line of the name
    start: int  # offset of the name
    end: int  # offset just after the value or the closing brace
    children: list["Entry"] = dataclasses.field(default_factory=list)


class _Tokens:
    def __init__(self, text: str):
        self.text = text
        self.items = [m for m in _TOKEN.finditer(text) if not m.group().startswith("#")]
        self.position = 0

    def peek(self) -> str | None:
        return self.items[self.position].group() if self.position < len(self.items) else None

    def take(self) -> re.Match:
        match = self.items[self.position]
        self.position += 1
        return match

    def line(self, offset: int) -> int:
        return self.text.count("\n", 0, offset) + 1


def _skip_balanced(tokens: _Tokens, closing: str) -> int:
    """Consumes up to and including the `closing` token matching an opener already taken;
    returns the offset after it (or the end of the text)."""
    depth, pairs = 1, {"{": "}", "<": ">", "[": "]"}
    stack = [closing]
    while tokens.peek() is not None:
        match = tokens.take()
        token = match.group()
        if token in pairs:
            stack.append(pairs[token])
            depth += 1
        elif token == stack[-1]:
            stack.pop()
            depth -= 1
            if depth == 0:
                return match.end()
    return len(tokens.text)


def _entries(tokens: _Tokens, closing: str | None) -> tuple[list[Entry], int]:
    entries: list[Entry] = []
    while True:
        token = tokens.peek()
        if token is None:
            return entries, len(tokens.text)
        if token == closing:
            return entries, tokens.take().end()
        if token in (",", ";") or token in ("}", ">"):
            tokens.take()
            continue
        name_match = tokens.take()
        name, start = name_match.group(), name_match.start()
        if name == "[":  # an extension or Any name: [type.googleapis.com/...]
            _skip_balanced(tokens, "]")
            name = "[extension]"
        if tokens.peek() == ":":
            tokens.take()
        value = tokens.peek()
        entry = Entry(name, tokens.line(start), start, name_match.end())
        if value in ("{", "<"):
            tokens.take()
            entry.children, entry.end = _entries(tokens, "}" if value == "{" else ">")
        elif value == "[":
            tokens.take()
            entry.end = _skip_balanced(tokens, "]")
        elif value is not None and value not in ("}", ">"):
            entry.end = tokens.take().end()
            while (tokens.peek() or " ")[0] in "\"'":  # adjacent strings concatenate
                entry.end = tokens.take().end()
        entries.append(entry)


def scan(text: str) -> list[Entry]:
    """The top-level entries of a text-format file, each with its nested entries."""
    return _entries(_Tokens(text), None)[0]


def split_path(field_path: str) -> list[tuple[str, int]]:
    """"a.b[2].c" -> [("a", 0), ("b", 2), ("c", 0)]."""
    parts = []
    for part in field_path.split("."):
        match = _PATH_PART.match(part)
        if not match:
            return []
        parts.append((match["name"], int(match["index"] or 0)))
    return parts


def find(entries: Sequence[Entry], field_path: str) -> tuple[Entry | None, Entry | None]:
    """(the entry written at `field_path`, or None; its deepest written ancestor)."""
    found, ancestor = None, None
    level: Sequence[Entry] = entries
    for depth, (name, index) in enumerate(split_path(field_path)):
        same = [e for e in level if e.name == name]
        if index >= len(same):
            return None, ancestor
        found = same[index]
        if depth < len(split_path(field_path)) - 1:
            ancestor, level = found, found.children
    return found, ancestor


def line_of(entries: Sequence[Entry], field_path: str, exact: bool = False) -> int | None:
    """The line of `field_path`; unless `exact`, else the line of its deepest ancestor."""
    entry, ancestor = find(entries, field_path)
    if entry is not None:
        return entry.line
    return None if exact or ancestor is None else ancestor.line


def entry_at(entries: Iterable[Entry], offset: int) -> Entry | None:
    """The innermost entry whose extent holds `offset`."""
    for entry in entries:
        if entry.start <= offset < max(entry.end, entry.start + 1):
            return entry_at(entry.children, offset) or entry
    return None


def blank(text: str, entry: Entry) -> str:
    """`text` with `entry` replaced by spaces (newlines kept, so lines do not move)."""
    return text[:entry.start] + re.sub(r"[^\n]", " ", text[entry.start:entry.end]) + \
        text[entry.end:]


def offset_of(text: str, line: int, column: int) -> int:
    """The offset of a 1-based (line, column), as protobuf's parse errors give them."""
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    return starts[min(line, len(starts)) - 1] + max(column - 1, 0)
