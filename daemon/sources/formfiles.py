"""Reading web-form export files: CSV, JSON, JSON Lines and XLSX, streamed a row at a time.

Each file is first checked whole (encoding, structure, truncation) without holding it in memory,
then read by a generator of records. Text encodings are sniffed (utf-8-sig, utf-16, utf-8,
gb18030), CSV delimiters guessed, JSON arrays decoded item by item, workbooks streamed by
daemon/sources/xlsxstream.py. A row's key comes from here too (row_key). Nothing here knows the
folder, the database or the pipeline: daemon/sources/forms.py runs the folder.

Limits hold while streaming, whatever a file claims: a CSV line or row past MAX_LINE characters,
a value past the csv module's field limit or more than MAX_COLUMNS values make that row bad
(a record with cells None and the reason), not the file; a file of more than MAX_ROWS rows is
refused whole. NUL bytes in a text export are values' characters (dropped by cell_text), not a
sign of a binary file, unless the file looks like UTF-16 or decodes as no text at all.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import os
import re
import unicodedata
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as daytime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from daemon.config import FormConfig
from daemon.sources.xlsxstream import MAX_COLUMNS, MAX_ROWS

FORMAT_OF_SUFFIX = {
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
}
SNIFF_CHARS = 16 * 1024  # the head csv.Sniffer looks at
CHUNK = 256 * 1024  # bytes read at a time when checking or streaming a file
MAX_KEY = 200  # longer submission ids are hashed (source_items.key holds 500)
SHORT_ROW = "short row"
MAX_LINE = 1 << 20  # characters of one CSV line (a longer line is one bad row)
MAX_RECORD = 4 << 20  # characters of one CSV row over all its lines
_CUT_CHARACTER = "ends inside a character"
_PLAIN_NUMBER = re.compile(r"[+-]?\d{1,30}(?:\.\d{1,30})?")


class FileProblem(Exception):
    """A file that cannot be read at all; str(exc) names the problem for its .error.txt."""


# --- values and headers --------------------------------------------------------------------


def cell_text(value: Any) -> str:
    """A cell as text, exactly as given but trimmed: 12.0 -> "12", dates in ISO form."""
    if value is None:
        return ""
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "TRUE" if value else "FALSE"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        text = str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    elif isinstance(value, datetime):
        text = value.date().isoformat() if value.time() == daytime() else value.isoformat(" ")
    elif isinstance(value, date | daytime):
        text = value.isoformat()
    elif isinstance(value, dict | list):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = str(value)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:
        text = text.replace("\x00", "")
    return text.strip()


def header_key(header: str) -> str:
    """Headers match trimmed, case-insensitively, full-width forms as their ASCII twins."""
    return unicodedata.normalize("NFKC", header).strip().casefold()


def _hash_value(field_name: str, text: str) -> str:
    """A value as it counts for a row's identity: spacing, width and case do not matter."""
    text = " ".join(unicodedata.normalize("NFKC", text).split()).casefold()
    if field_name == "amount":
        number = text.replace(",", "").removeprefix("¥").removeprefix("￥").strip()
        if _PLAIN_NUMBER.fullmatch(number):  # 12.50 and 12.5 are one amount
            text = format(Decimal(number).normalize(), "f")
    return text


def row_key(fields: dict[str, str], extra: dict[str, str], submission_id: str | None) -> str:
    """The submission id, or "sha256:<hex>" of the normalised mapped values (never the file)."""
    if submission_id:
        key = unicodedata.normalize("NFKC", submission_id).strip()
        if len(key) <= MAX_KEY:
            return key
        return "sha256:" + hashlib.sha256(f"id:{key}".encode()).hexdigest()
    # A row with no mapped value at all is told apart by its other columns.
    identity = fields or extra
    normal = {name: _hash_value(name, value) for name, value in identity.items()}
    blob = json.dumps(normal, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(blob.encode("utf-8")).hexdigest()


class Columns:
    """The form's column mapping: export header -> our field, the id column, the rest extra."""

    def __init__(self, form: FormConfig) -> None:
        self.fields = {header_key(header): name for name, header in form.columns.items()}
        self.mapped = frozenset(form.columns)
        self.id_key = header_key(form.id_column) if form.id_column else None
        self.email_header = form.columns.get("email")
        self._cache: dict[str, tuple[str | None, bool]] = {}

    def lookup(self, header: str) -> tuple[str | None, bool]:
        """(our field or None, whether it is the id column) for one header."""
        found = self._cache.get(header)
        if found is None:
            key = header_key(header)
            found = self._cache[header] = (self.fields.get(key), key == self.id_key)
            if len(self._cache) > 10_000:  # JSON objects with ever new keys: stay bounded
                self._cache.clear()
        return found

    def has_email(self, headers: Iterable[str]) -> bool:
        return self.email_header is None or any(self.lookup(h)[0] == "email" for h in headers)

    def split(
        self, cells: Iterable[tuple[str, Any]]
    ) -> tuple[dict[str, str], dict[str, str], str | None]:
        """(fields, extra, submission id) of one row; empty cells are left out."""
        fields: dict[str, str] = {}
        extra: dict[str, str] = {}
        submission_id = None
        for header, value in cells:
            text = cell_text(value)
            if not text:
                continue
            name, is_id = self.lookup(header)
            if name is not None:
                fields.setdefault(name, text)
            else:
                extra.setdefault(header.strip() or "(no header)", text)
            if is_id and submission_id is None:
                submission_id = text
        return fields, extra, submission_id


def _unique_headers(row: list[Any]) -> list[str]:
    headers: list[str] = []
    taken: set[str] = set()
    for i, value in enumerate(row, start=1):
        name = cell_text(value) or f"column {i}"
        base, n = name, 2
        while name in taken:
            name, n = f"{base} ({n})", n + 1
        headers.append(name)
        taken.add(name)
    return headers


# --- reading files ----------------------------------------------------------------------------
#
# Each reader yields (row number, cells, problems): cells are (header, value) pairs, or None
# for a row past a limit, left unread (its problems say why). Row numbers are what a person
# opening the file sees: the spreadsheet row (the header is row 1), the JSON Lines line, the
# position in a JSON array.

Record = tuple[int, list[tuple[str, Any]] | None, list[str]]
RawRow = tuple[int, list[Any] | None, list[str]]  # a row's values as read, before the header


def text_encoding(path: Path) -> str:
    """utf-8-sig, utf-16, utf-8 or gb18030 (Excel's "CSV" in China is GBK): the whole file fits."""
    with open(path, "rb") as fh:
        head = fh.read(64 * 1024)
    if not head:
        raise FileProblem("empty file (0 bytes)")
    if head.startswith(codecs.BOM_UTF8):
        candidates: tuple[str, ...] = ("utf-8-sig",)
    elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        candidates = ("utf-16",)
    elif head.startswith(b"PK\x03\x04"):
        raise FileProblem("a ZIP archive (an XLSX workbook?), not a text export")
    elif _looks_utf16(head):
        raise FileProblem("binary data (NUL bytes), not a text export")
    else:
        candidates = ("utf-8", "gb18030")
    failures = []
    for encoding in candidates:
        failure = _decode_failure(path, encoding)
        if failure is None:
            return encoding
        failures.append(f"{encoding}: {failure}")
    for encoding, failure in zip(candidates, failures, strict=True):
        if failure.endswith(_CUT_CHARACTER):
            raise FileProblem(f"truncated: the file ends inside a character ({encoding})")
    if b"\x00" in head:
        raise FileProblem("binary data (NUL bytes), not a text export")
    raise FileProblem(f"not text in a known encoding ({'; '.join(failures)})")


def _looks_utf16(head: bytes) -> bool:
    """Text in UTF-16 without a byte-order mark: a NUL beside nearly every other byte, on one
    side. A NUL typed into a form (or a run of them) sits on both sides and is just a value."""
    nuls = head.count(0)
    if nuls * 4 < len(head):
        return False
    even = head[0::2].count(0)
    return max(even, nuls - even) * 10 >= nuls * 9


def _decode_failure(path: Path, encoding: str) -> str | None:
    """Where the file stops decoding as `encoding`, read a chunk at a time; None if it fits."""
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    offset = 0
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(CHUNK)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                if not chunk:
                    return _CUT_CHARACTER
                return f"byte 0x{chunk[exc.start]:02x} at offset {offset + exc.start}"
            if not chunk:
                return None
            offset += len(chunk)


def csv_delimiter(head: str) -> str:
    """What csv.Sniffer finds among , ; tab |, checked against the header line."""
    lines = head.splitlines(keepends=True)
    sample = "".join(lines[:-1] if len(lines) > 1 else lines)[:SNIFF_CHARS]
    header = lines[0] if lines else ""
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        delimiter = ""
    if delimiter and delimiter in header:
        return delimiter
    counts = {d: header.count(d) for d in ",;\t|"}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


@dataclass
class _CsvLayout:
    encoding: str
    delimiter: str
    strict: bool


class _Table:
    """Header row first (the first non-empty one), then rows as (header, value) pairs."""

    def __init__(self, rows: Iterator[RawRow], *, short_rows: bool = True) -> None:
        self.rows = rows
        self.headers: list[str] | None = None
        self.short_rows = short_rows  # CSV: a short row is news; XLSX leaves out empty cells

    def read_header(self) -> list[str]:
        for n, row, problems in self.rows:
            if row is None:
                raise FileProblem(f"the header (row {n}) is not readable: {'; '.join(problems)}")
            if any(cell_text(v) for v in row):
                self.headers = _unique_headers(row)
                return self.headers
        self.headers = []
        return []

    def __iter__(self) -> Iterator[Record]:
        try:
            headers = self.headers if self.headers is not None else self.read_header()
            width = len(headers)
            for n, row, bad in self.rows:
                if row is None:
                    yield n, None, bad
                    continue
                if not any(cell_text(v) for v in row):
                    continue  # blank lines and Excel's formatted-but-empty rows
                problems = list(bad)
                cells = list(zip(headers, row, strict=False))
                if len(row) > width and any(cell_text(v) for v in row[width:]):
                    problems.append(f"{len(row)} values for {width} columns")
                    cells += [(f"column {i}", v) for i, v in enumerate(row[width:], width + 1)]
                elif len(row) < width and self.short_rows:
                    problems.append(f"{SHORT_ROW} ({len(row)} of {width} columns)")
                yield n, cells, problems
        finally:
            close = getattr(self.rows, "close", None)
            if close is not None:
                close()  # the reader's file, now rather than when collected


class _Overlong(Exception):
    """A CSV line or row past its limit (str: which)."""


class _Lines:
    """A text file's lines for csv.reader, none held longer than MAX_LINE characters.

    It counts the quotes and characters of the row being read: after a bad row, the rest of
    it (a quoted value may go on over many lines) is passed over unread."""

    def __init__(self, fh: TextIO) -> None:
        self.fh = fh
        self.quotes = self.chars = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self.fh.readline(MAX_LINE)
        if not line:
            raise StopIteration
        self.quotes += line.count('"')
        self.chars += len(line)
        if len(line) == MAX_LINE and not line.endswith(("\n", "\r")):
            self._drop_line()
            raise _Overlong(f"a line longer than {MAX_LINE:,} characters")
        if self.chars > MAX_RECORD:
            raise _Overlong(f"a row longer than {MAX_RECORD:,} characters")
        return line

    def _drop_line(self) -> bool:
        """Read on to the end of the line; False at the end of the file."""
        while True:
            piece = self.fh.readline(CHUNK)
            self.quotes += piece.count('"')
            if not piece:
                return False
            if piece.endswith(("\n", "\r")):
                return True

    def drop_row(self) -> None:
        """Pass over what is left of a bad row: on to the line that closes its open quote."""
        while self.quotes % 2 and self._drop_line():
            pass
        self.next_row()

    def next_row(self) -> None:
        self.quotes = self.chars = 0


def _csv_rows(path: Path, layout: _CsvLayout) -> Iterator[RawRow]:
    """The rows of a CSV file; a row past a limit comes as (n, None, [why]) and the next goes on."""
    with open(path, encoding=layout.encoding, newline="") as fh:
        lines, n = _Lines(fh), 0
        while True:
            try:
                for row in csv.reader(lines, delimiter=layout.delimiter, strict=layout.strict):
                    n += 1
                    lines.next_row()
                    if len(row) > MAX_COLUMNS:
                        yield n, None, [f"more than {MAX_COLUMNS:,} values in the row"]
                    else:
                        yield n, row, []
                return
            except (_Overlong, csv.Error) as exc:
                if isinstance(exc, csv.Error) and "field larger than field limit" not in str(exc):
                    raise
                why = str(exc) if isinstance(exc, _Overlong) else (
                    f"a value longer than {csv.field_size_limit():,} characters"
                )  # fmt: skip
                n += 1
                lines.drop_row()
            yield n, None, [why]


def check_csv(path: Path, columns: Columns) -> tuple[_CsvLayout, int]:
    """The layout to read the file with and its row count, or FileProblem."""
    encoding = text_encoding(path)
    with open(path, encoding=encoding, newline="") as fh:
        head = fh.read(SNIFF_CHARS)
    layout = _CsvLayout(encoding, csv_delimiter(head), strict=True)
    try:
        rows = _count_csv(path, layout, columns)
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            raise FileProblem("truncated: the file ends inside a quoted value") from exc
        layout.strict = False  # a stray quote in a hand-made file: read it as Excel would
        try:
            rows = _count_csv(path, layout, columns)
        except csv.Error as again:
            raise FileProblem(f"not readable as CSV: {again}") from again
    return layout, rows


def _count_csv(path: Path, layout: _CsvLayout, columns: Columns) -> int:
    table = _Table(_csv_rows(path, layout))
    headers = table.read_header()
    _require_email_column(columns, headers)
    count, last_short = 0, False
    for _n, _cells, problems in table:
        count += 1
        if count > MAX_ROWS:
            raise FileProblem(f"more than {MAX_ROWS:,} rows: split the export")
        last_short = any(p.startswith(SHORT_ROW) for p in problems)
    if last_short and not _ends_with_newline(path):
        raise FileProblem("truncated: the last row is cut off (fewer columns, no final newline)")
    return count


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell() == 0:
            return False
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) in (b"\n", b"\r")


def _require_email_column(columns: Columns, headers: list[str]) -> None:
    if not headers:
        raise FileProblem("no header row")
    if not columns.has_email(headers):
        shown = ", ".join(headers[:20]) + (", ..." if len(headers) > 20 else "")
        raise FileProblem(f"no email column {columns.email_header!r} in the header ({shown})")


def _json_items(fh: TextIO) -> Iterator[Any]:
    """The items of a top-level JSON array, one at a time, from a buffer of about CHUNK chars."""
    decoder = json.JSONDecoder()
    buf, pos, eof, index = "", 0, False, 0

    def more() -> bool:
        nonlocal buf, pos, eof
        if eof:
            return False
        if len(buf) - pos > MAX_RECORD:
            raise FileProblem(f"item {index + 1} is longer than {MAX_RECORD:,} characters")
        chunk = fh.read(CHUNK)
        if not chunk:
            eof = True
            return False
        buf, pos = buf[pos:] + chunk, 0
        return True

    def skip_space() -> str:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n\ufeff":
                pos += 1
            if pos < len(buf):
                return buf[pos]
            if not more():
                return ""

    if skip_space() != "[":
        raise FileProblem("not a JSON array of objects (it does not start with '[')")
    pos += 1
    if skip_space() == "]":
        pos += 1
    else:
        while True:
            if not skip_space():
                raise FileProblem(f"truncated JSON: the file ends inside item {index + 1}")
            while True:
                try:
                    value, end = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError as exc:
                    if more():
                        continue
                    if exc.pos >= len(buf) - 1 or "Unterminated" in exc.msg:
                        raise FileProblem(
                            f"truncated JSON: the file ends inside item {index + 1}"
                        ) from exc
                    raise FileProblem(f"invalid JSON in item {index + 1}: {exc.msg}") from exc
                if end == len(buf) and more():
                    continue  # a bare number may go on in the next chunk
                break
            pos = end
            index += 1
            yield value
            token = skip_space()
            pos += 1
            if token == "]":
                break
            if token != ",":
                raise FileProblem(
                    f"invalid JSON after item {index}: expected ',' or ']'"
                    if token
                    else f"truncated JSON: the file ends after item {index}"
                )
    if skip_space():
        raise FileProblem("invalid JSON: more data after the closing ']'")


def _json_records(path: Path, encoding: str) -> Iterator[Record]:
    with open(path, encoding=encoding) as fh:
        for n, item in enumerate(_json_items(fh), start=1):
            yield _object_record(n, item)


def _object_record(n: int, item: Any) -> Record:
    if isinstance(item, dict):
        return n, [(str(k), v) for k, v in item.items()], []
    return n, [], [f"not an object but {type(item).__name__}"]


def _jsonl_records(path: Path, encoding: str) -> Iterator[Record]:
    with open(path, encoding=encoding, newline="") as fh:
        lines, n = _Lines(fh), 0
        while True:
            n += 1
            lines.next_row()
            try:
                line = next(lines)
            except StopIteration:
                return
            except _Overlong as exc:
                yield n, None, [str(exc)]
                continue
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                yield n, [], [f"invalid JSON line: {exc.msg}"]
                continue
            yield _object_record(n, item)


def check_json(path: Path, columns: Columns, lines: bool) -> tuple[str, int]:
    """The encoding and item count of a JSON or JSON Lines export, or FileProblem."""
    encoding = text_encoding(path)
    records = _jsonl_records(path, encoding) if lines else _json_records(path, encoding)
    count = good = 0
    emails = columns.email_header is None
    last_bad = False
    for _n, cells, problems in records:
        count += 1
        if count > MAX_ROWS:
            raise FileProblem(f"more than {MAX_ROWS:,} items: split the export")
        last_bad = bool(problems)
        if cells is not None and not problems:
            good += 1
            emails = emails or columns.has_email(h for h, _ in cells)
    if lines and last_bad and not _ends_with_newline(path):
        raise FileProblem("truncated: the last line is cut off")
    if count and not good:
        raise FileProblem("no JSON object in the file")
    if count and not emails:
        raise FileProblem(f"no object has the email key {columns.email_header!r}")
    return encoding, count


def _xlsx_rows(path: Path, sheet: str | None) -> Iterator[RawRow]:
    """Formulas come as their text ("=..."): stored as given, never evaluated."""
    from daemon.sources.xlsxstream import BadWorkbook, sheet_rows

    try:
        yield from sheet_rows(path, sheet)
    except BadWorkbook as exc:
        raise FileProblem(str(exc)) from exc


def check_xlsx(path: Path, columns: Columns, sheet: str | None) -> int:
    """The row count of a workbook's sheet, or FileProblem (truncated, damaged, no sheet)."""
    if not zipfile.is_zipfile(path):
        raise FileProblem("not an XLSX workbook (no complete ZIP structure: truncated?)")
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise FileProblem(f"damaged XLSX workbook: {exc}") from exc
    if damaged is not None:
        raise FileProblem(f"damaged XLSX workbook: {damaged} fails its checksum")
    try:
        table = _Table(_xlsx_rows(path, sheet), short_rows=False)
        _require_email_column(columns, table.read_header())
        return sum(1 for _ in table)
    except FileProblem:
        raise
    except Exception as exc:  # openpyxl raises many kinds for broken XML
        raise FileProblem(f"unreadable XLSX workbook: {type(exc).__name__}: {exc}") from exc


def open_records(
    path: Path, fmt: str, columns: Columns, sheet: str | None
) -> tuple[Iterator[Record], int]:
    """Check a file whole, then its records reader and row count; FileProblem if unreadable."""
    if fmt == "csv":
        layout, rows = check_csv(path, columns)
        return iter(_Table(_csv_rows(path, layout))), rows
    if fmt in ("json", "jsonl"):
        encoding, rows = check_json(path, columns, lines=fmt == "jsonl")
        reader = _jsonl_records if fmt == "jsonl" else _json_records
        return reader(path, encoding), rows
    rows = check_xlsx(path, columns, sheet)
    return iter(_Table(_xlsx_rows(path, sheet), short_rows=False)), rows
