"""Reading a JSON array file: its layout, then ``[ {...}, {...} ]`` decoded one element at a time.

Part of the streaming readers (``readers``): the main process decodes the objects and hands
them to the workers in chunks, never holding more than one chunk of the file in memory.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator

from audience.ingest.readers import (
    CHUNK_BYTES,
    MAX_RECORD_BYTES,
    SNIFF_BYTES,
    UTF8_BOM,
    Chunk,
    FileProblem,
    Layout,
    check_not_empty_or_utf16,
)


def inspect_json(path: str, file_format: str) -> Layout:
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    bom = check_not_empty_or_utf16(head)
    body = head[len(UTF8_BOM) :] if bom else head
    first = body.lstrip()[:1]
    if file_format == "json" and first != b"[":
        raise FileProblem("a JSON file must hold an array of objects, starting with '['", column="")
    notes = ("a UTF-8 byte order mark (BOM) was found and skipped",) if bom else ()
    return Layout(file_format, bom=bom, header_bytes=len(UTF8_BOM) if bom else 0, notes=notes)


class JsonArrayReader:
    """Decode ``[ {...}, {...} ]`` one element at a time, with the line each element starts on.

    A syntax error cannot be resynchronised in a JSON array, so the reader stops
    there; ``problem`` then says where and why, and the rows before it are kept.
    """

    def __init__(self, path: str, layout: Layout, records_per_chunk: int = 5000):
        self.path = path
        self.layout = layout
        self.records_per_chunk = records_per_chunk
        self.problem: FileProblem | None = None
        self._decoder = json.JSONDecoder()

    def __iter__(self) -> Iterator[Chunk]:
        with open(self.path, "rb") as handle:
            handle.seek(self.layout.header_bytes)
            yield from self._elements(handle)

    def _elements(self, handle) -> Iterator[Chunk]:
        state = _JsonState(handle, self.layout.header_bytes)
        if not state.expect("["):
            self.problem = FileProblem("a JSON file must hold an array of objects, starting with '['")
            return
        batch: list[tuple[int, object]] = []
        first = True
        while True:
            if state.expect("]"):
                state.skip_space()
                if state.pos < len(state.buffer):  # more than white space after the array
                    self.problem = state.error("content after the closing ']' of the array")
                break
            if not first and not state.expect(","):
                self.problem = state.error("expected ',' or ']' between array elements")
                break
            first = False
            element = state.decode(self._decoder)
            if isinstance(element, FileProblem):
                self.problem = element
                break
            batch.append(element)
            if len(batch) >= self.records_per_chunk:
                yield Chunk("records", batch[0][0], batch, state.offset)
                batch = []
        if batch:
            yield Chunk("records", batch[0][0], batch, state.offset)


class _JsonState:
    """A sliding text window over the file for JsonArrayReader."""

    def __init__(self, handle, offset: int):
        self.handle = handle
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.buffer = ""
        self.pos = 0
        self.line = 1
        self.offset = offset
        self.eof = False

    def _fill(self) -> bool:
        if self.eof:
            return False
        raw = self.handle.read(CHUNK_BYTES)
        self.offset += len(raw)
        try:
            text = self.decoder.decode(raw, final=not raw)
        except UnicodeDecodeError:
            raise FileProblem("not valid UTF-8; JSON files must be UTF-8 encoded", line=self.line) from None
        self.eof = not raw
        self.line += self.buffer.count("\n", 0, self.pos)
        self.buffer = self.buffer[self.pos :] + text
        self.pos = 0
        return True

    def skip_space(self) -> None:
        while True:
            while self.pos < len(self.buffer) and self.buffer[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buffer) or not self._fill():
                return

    def current_line(self) -> int:
        return self.line + self.buffer.count("\n", 0, self.pos)

    def expect(self, char: str) -> bool:
        self.skip_space()
        if self.buffer[self.pos : self.pos + 1] == char:
            self.pos += 1
            return True
        return False

    def error(self, reason: str) -> FileProblem:
        return FileProblem(f"malformed JSON: {reason}; the rest of the file was not read", line=self.current_line())

    def decode(self, decoder: json.JSONDecoder):
        self.skip_space()
        while True:
            try:
                value, end = decoder.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError as exc:
                if not self.eof and len(self.buffer) - self.pos < MAX_RECORD_BYTES and self._fill():
                    continue
                line = self.current_line() + self.buffer.count("\n", self.pos, exc.pos)
                return FileProblem(f"malformed JSON: {exc.msg}; the rest of the file was not read", line=line)
            except (ValueError, RecursionError) as exc:  # an integer of over 4300 digits, nesting too deep
                reason = str(exc).split(";")[0] if isinstance(exc, ValueError) else "nested too deeply"
                return FileProblem(
                    f"not readable as JSON ({reason}); the rest of the file was not read", line=self.current_line()
                )
            if end == len(self.buffer) and not self.eof:
                # A number at the very end of the window may continue in the next block.
                self._fill()
                continue
            line = self.current_line()
            self.pos = end
            return (line, value)
