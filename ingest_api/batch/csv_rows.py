"""Streaming batch uploads: the multipart file part, then CSV rows validated chunk by chunk."""

from __future__ import annotations

import codecs
import csv
import operator
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from schemas.features import FEATURE_NAMES, FEATURE_RANGES, TARGET_NAME, nearest_column
from schemas.messages import CUSTOMER_ID_PATTERN

CUSTOMER_COLUMN = "customer_id"
_CUSTOMER_ID = re.compile(CUSTOMER_ID_PATTERN)
_LOWER = tuple(low for low, _ in FEATURE_RANGES)
_UPPER = tuple(high for _, high in FEATURE_RANGES)
# Canonical spellings of every allowed value per column: one set lookup replaces int() plus two compares.
_ALLOWED = tuple(frozenset(str(value) for value in range(low, high + 1)) for low, high in FEATURE_RANGES)
_REQUIRED = tuple(name for name in FEATURE_NAMES if name != TARGET_NAME)
_KNOWN = frozenset(FEATURE_NAMES) | {CUSTOMER_COLUMN}
# Bounds checked before any per-name work (a valid header is ~600 bytes and 87 columns; a row ~300 bytes).
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADER_COLUMNS = 256
MAX_LINE_BYTES = 64 * 1024
_SHOWN_NAME_CHARS = 40
_OTHER_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}


class CsvHeaderError(ValueError):
    """The header row is unusable; `problems` lists each reason."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class TooManyRows(ValueError):
    """The file has more data rows than allowed."""

    def __init__(self, limit: int, line: int) -> None:
        super().__init__(f"the file has more than {limit} data rows (limit reached at line {line})")
        self.limit = limit
        self.line = line


@dataclass(slots=True)
class ParsedRows:
    """Rows completed by one chunk: (line, customer_id, the 86 values comma-joined) and (line, reason)."""

    valid: list[tuple[int, str, str]] = field(default_factory=list)
    invalid: list[tuple[int, str]] = field(default_factory=list)


class CsvRowParser:
    """Feed bytes as they arrive; each feed returns the rows whose line is complete (line 1 is the header)."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.rows_total = 0
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._tail = ""
        self._line = 0
        self._columns = 0
        self._customer_pos = -1
        self._getter: Callable[[list[str]], tuple[str, ...]] | None = None
        self._names: tuple[str, ...] = ()
        self._allowed = _ALLOWED
        self._has_target = True

    @property
    def header_seen(self) -> bool:
        """True once the header row has been read and accepted."""
        return self._getter is not None

    def feed(self, data: bytes) -> ParsedRows:
        """Parse the complete lines in data (plus what was left over); keep the partial last line."""
        text = self._tail + self._decoder.decode(data)
        if not self.header_seen:
            first = text.find("\n")
            if (first if first >= 0 else len(text)) > MAX_HEADER_BYTES:
                raise CsvHeaderError([f"the header line is longer than {MAX_HEADER_BYTES} bytes"])
        cut = text.rfind("\n")
        if cut < 0:
            if len(text) > MAX_LINE_BYTES:
                # Refused here: re-joining an endless line chunk after chunk would cost quadratic CPU.
                raise UploadFormatError(f"line {self._line + 1}: longer than {MAX_LINE_BYTES} bytes")
            self._tail = text
            return ParsedRows()
        self._tail = text[cut + 1:]
        return self._lines(text[:cut].split("\n"))

    def finish(self) -> ParsedRows:
        """Parse whatever is left once the upload ends; raise CsvHeaderError when there was no header."""
        text = self._tail + self._decoder.decode(b"", final=True)
        self._tail = ""
        parsed = self._lines([text]) if text.strip() else ParsedRows()
        if not self.header_seen:
            raise CsvHeaderError(["the file is empty: expected a header with customer_id and the 86 columns"])
        return parsed

    def _lines(self, lines: list[str]) -> ParsedRows:
        parsed = ParsedRows()
        try:
            self._parse(lines, parsed)
        except csv.Error as error:
            # An unbalanced quote or a bare carriage return breaks every following line: refuse the upload.
            raise UploadFormatError(f"line {self._line + 1}: malformed CSV ({error})") from None
        return parsed

    def _parse(self, lines: list[str], parsed: ParsedRows) -> None:
        for row in csv.reader(line[:-1] if line.endswith("\r") else line for line in lines):
            self._line += 1
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if self._getter is None:
                self._read_header(row)
                continue
            self.rows_total += 1
            if self.rows_total > self.max_rows:
                raise TooManyRows(self.max_rows, self._line)
            self._read_row(row, parsed)

    def _read_header(self, row: list[str]) -> None:
        if len(row) > MAX_HEADER_COLUMNS:
            raise CsvHeaderError([f"the header has {len(row)} columns; at most {MAX_HEADER_COLUMNS} are "
                                  f"allowed (customer_id and the {len(FEATURE_NAMES)} feature columns)"])
        if len(row) == 1:
            for delimiter, name in _OTHER_DELIMITERS.items():
                if delimiter in row[0]:
                    raise CsvHeaderError([f"the header has one column, and it contains {name}s: the file "
                                          f"looks {name}-separated; separate the columns with commas"])
        names = [name.strip() for name in row]
        present = set(names)
        problems = []
        unknown = [_guessed(name) for name in names if name not in _KNOWN]
        if unknown:
            problems.append(f"unknown column(s): {_listed(unknown)}")
        missing = [name for name in (CUSTOMER_COLUMN, *_REQUIRED) if name not in present]
        if missing:
            problems.append(f"missing column(s): {_listed(missing)}")
        # Counted once: names.count() per name made a 80,000-column header cost 11 s of event loop.
        duplicated = sorted(_shown(name) for name, count in Counter(names).items() if count > 1)
        if duplicated:
            problems.append(f"duplicated column(s): {_listed(duplicated)}")
        if problems:
            raise CsvHeaderError(problems)
        self._has_target = TARGET_NAME in names
        wanted = FEATURE_NAMES if self._has_target else _REQUIRED
        self._names = wanted
        self._allowed = _ALLOWED if self._has_target else _ALLOWED[: len(_REQUIRED)]
        self._getter = operator.itemgetter(*(names.index(name) for name in wanted))
        self._customer_pos = names.index(CUSTOMER_COLUMN)
        self._columns = len(names)

    def _read_row(self, row: list[str], parsed: ParsedRows) -> None:
        line = self._line
        if len(row) != self._columns:
            parsed.invalid.append((line, f"expected {self._columns} values; got {len(row)}"))
            return
        customer_id = row[self._customer_pos].strip()
        if _CUSTOMER_ID.fullmatch(customer_id) is None:
            parsed.invalid.append((line, f"customer_id {customer_id[:80]!r} must be 1–64 letters, digits or "
                                         "_ . @ -, starting with a letter or digit"))
            return
        assert self._getter is not None
        cells = self._getter(row)
        if all(map(operator.contains, self._allowed, cells)):
            joined = ",".join(cells)
            parsed.valid.append((line, customer_id, joined if self._has_target else joined + ",0"))
            return
        try:
            values = list(map(int, cells))
        except ValueError:
            parsed.invalid.append((line, self._not_integer(cells)))
            return
        if not self._has_target:
            values.append(0)
        if not (all(map(operator.le, _LOWER, values)) and all(map(operator.le, values, _UPPER))):
            parsed.invalid.append((line, _out_of_range(values)))
            return
        parsed.valid.append((line, customer_id, ",".join(map(str, values))))

    def _not_integer(self, cells: tuple[str, ...]) -> str:
        for name, cell in zip(self._names, cells, strict=True):
            try:
                int(cell)
            except ValueError:
                return f"{name}: {cell[:40]!r} is not an integer"
        return "a value is not an integer"


def _shown(name: str) -> str:
    return name if len(name) <= _SHOWN_NAME_CHARS else name[:_SHOWN_NAME_CHARS] + "…"


def _guessed(name: str) -> str:
    guess = CUSTOMER_COLUMN if name.strip().lower() == CUSTOMER_COLUMN else nearest_column(name)
    return f"{_shown(name)} (did you mean {guess}?)" if guess else _shown(name)


def _listed(names: list[str], shown: int = 10) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _out_of_range(values: list[int]) -> str:
    for index, (value, low, high) in enumerate(zip(values, _LOWER, _UPPER, strict=True)):
        if not low <= value <= high:
            return f"{FEATURE_NAMES[index]} must be {low}–{high}; got {value}"
    return "a value is out of range"


class UploadFormatError(ValueError):
    """The request body is not a usable multipart upload."""


class MultipartFileReader:
    """Streams the file part of a multipart/form-data body (python-multipart's push parser, no spooling)."""

    def __init__(self, content_type: str, field_name: str = "file") -> None:
        mime, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if mime != b"multipart/form-data" or not boundary:
            raise UploadFormatError("expected multipart/form-data with a boundary, or text/csv")
        self.field_name = field_name
        self.filename: str | None = None
        self.found = False
        self._in_file = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._data: list[bytes] = []
        callbacks: Any = {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }
        try:
            self._parser = MultipartParser(boundary, callbacks=callbacks)
        except FormParserError as error:
            raise UploadFormatError(f"unusable multipart boundary: {error}") from None

    def feed(self, chunk: bytes) -> list[bytes]:
        """Push a body chunk; return the file part's bytes it completed."""
        try:
            self._parser.write(chunk)
        except FormParserError as error:
            raise UploadFormatError(f"malformed multipart body: {error}") from None
        data, self._data = self._data, []
        return data

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[bytes(self._header_name).lower()] = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b"").decode("latin-1"))
        name = options.get(b"name", b"").decode("utf-8", errors="replace")
        if not self.found and (name == self.field_name or b"filename" in options):
            self.found = self._in_file = True
            raw = options.get(b"filename")
            self.filename = raw.decode("utf-8", errors="replace") if raw else None

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._data.append(bytes(data[start:end]))

    def _part_end(self) -> None:
        self._in_file = False
