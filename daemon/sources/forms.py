"""A web-form export folder: CSV, JSON, JSON Lines and XLSX files, one incoming item per row.

A file is taken only once it is complete: names of files still being written (.tmp, .part,
.crdownload, hidden, Excel's ~$ lock files) are skipped, and a file must have kept its size and
mtime for `settle` seconds, seen across two polls or told by its own mtime. It is then checked
whole (encoding, structure, truncation) without holding it in memory; a file that cannot be read
at all goes to failed/ with a .error.txt naming the problem. A readable file is streamed: an
open reader is kept across fetch() calls and at most `limit` rows are handed out per call.

A row's key is its id_column value, else a sha256 of its normalised mapped values; never the
file's name, so a row repeated by a later cumulative export is known to the database already and
changes nothing. After the last row of a file has been settled, the file moves to
processed/<UTC time>-<name> beside a .report.csv listing its bad rows. Every CSV written here is
neutralised against formula injection (spreadsheet_safe).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import logging
import os
import re
import time
import unicodedata
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as daytime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from daemon import log as logfmt
from daemon.clock import Clock, SystemClock
from daemon.config import FormConfig
from daemon.items import Incoming
from handlers.forms import row_problems

log = logging.getLogger("caseloop.forms")

SKIP_PREFIXES = (".", "~$")
SKIP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".download", ".filepart")
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
REPORT_HEADER = ("row", "problem", "outcome")
SHORT_ROW = "short row"
_CUT_CHARACTER = "ends inside a character"
_PLAIN_NUMBER = re.compile(r"[+-]?\d{1,30}(?:\.\d{1,30})?")


class FileProblem(Exception):
    """A file that cannot be read at all; str(exc) names the problem for its .error.txt."""


def spreadsheet_safe(value: object) -> str:
    """A CSV cell no spreadsheet runs as a formula: = + - @ (and tab, CR) get a leading '."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


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


class _Columns:
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
    for i, value in enumerate(row, start=1):
        name = cell_text(value) or f"column {i}"
        base, n = name, 2
        while name in headers:
            name, n = f"{base} ({n})", n + 1
        headers.append(name)
    return headers


# --- reading files ----------------------------------------------------------------------------
#
# Each reader yields (row number, cells, problems): cells are (header, value) pairs. Row
# numbers are what a person opening the file sees: the spreadsheet row (the header is row 1),
# the JSON Lines line, the position in a JSON array.

Record = tuple[int, list[tuple[str, Any]], list[str]]


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
    elif b"\x00" in head:
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
    raise FileProblem(f"not text in a known encoding ({'; '.join(failures)})")


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

    def __init__(self, rows: Iterator[tuple[int, list[Any]]], *, short_rows: bool = True) -> None:
        self.rows = rows
        self.headers: list[str] | None = None
        self.short_rows = short_rows  # CSV: a short row is news; XLSX leaves out empty cells

    def read_header(self) -> list[str]:
        for _n, row in self.rows:
            if any(cell_text(v) for v in row):
                self.headers = _unique_headers(row)
                return self.headers
        self.headers = []
        return []

    def __iter__(self) -> Iterator[Record]:
        try:
            headers = self.headers if self.headers is not None else self.read_header()
            width = len(headers)
            for n, row in self.rows:
                if not any(cell_text(v) for v in row):
                    continue  # blank lines and Excel's formatted-but-empty rows
                problems = []
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


def _csv_rows(path: Path, layout: _CsvLayout) -> Iterator[tuple[int, list[Any]]]:
    with open(path, encoding=layout.encoding, newline="") as fh:
        reader = csv.reader(fh, delimiter=layout.delimiter, strict=layout.strict)
        yield from enumerate(reader, start=1)


def check_csv(path: Path, columns: _Columns) -> tuple[_CsvLayout, int]:
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


def _count_csv(path: Path, layout: _CsvLayout, columns: _Columns) -> int:
    table = _Table(_csv_rows(path, layout))
    headers = table.read_header()
    _require_email_column(columns, headers)
    count, last_short = 0, False
    for _n, _cells, problems in table:
        count += 1
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


def _require_email_column(columns: _Columns, headers: list[str]) -> None:
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
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                yield n, [], [f"invalid JSON line: {exc.msg}"]
                continue
            yield _object_record(n, item)


def check_json(path: Path, columns: _Columns, lines: bool) -> tuple[str, int]:
    """The encoding and item count of a JSON or JSON Lines export, or FileProblem."""
    encoding = text_encoding(path)
    records = _jsonl_records(path, encoding) if lines else _json_records(path, encoding)
    count = good = 0
    emails = columns.email_header is None
    last_bad = False
    for _n, cells, problems in records:
        count += 1
        last_bad = bool(problems)
        if not problems:
            good += 1
            emails = emails or columns.has_email(h for h, _ in cells)
    if lines and last_bad and not _ends_with_newline(path):
        raise FileProblem("truncated: the last line is cut off")
    if count and not good:
        raise FileProblem("no JSON object in the file")
    if count and not emails:
        raise FileProblem(f"no object has the email key {columns.email_header!r}")
    return encoding, count


def _open_workbook(path: Path) -> Any:
    import openpyxl  # only form folders with XLSX files need it

    return openpyxl.load_workbook(path, read_only=True, data_only=False)


def _sheet(workbook: Any, name: str | None) -> Any:
    if name is None:
        return workbook.worksheets[0]
    if name not in workbook.sheetnames:
        raise FileProblem(f"no sheet named {name!r} (sheets: {', '.join(workbook.sheetnames)})")
    return workbook[name]


def _xlsx_rows(path: Path, sheet: str | None) -> Iterator[tuple[int, list[Any]]]:
    workbook = _open_workbook(path)
    try:
        ws = _sheet(workbook, sheet)
        ws.reset_dimensions()  # some exporters write wrong dimensions; read every row there is
        # Formulas come as their text ("=..."): stored as given, never evaluated.
        yield from enumerate(ws.iter_rows(values_only=True), start=1)
    finally:
        workbook.close()


def check_xlsx(path: Path, columns: _Columns, sheet: str | None) -> int:
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


# --- the source -------------------------------------------------------------------------------


@dataclass
class _Seen:
    """A candidate file's size and mtime, and since when (time.time()) we have seen them."""

    sig: tuple[int, int]
    since: float


@dataclass
class _File:
    """A file being read: its reader, how many rows are out, its report being written."""

    name: str
    path: Path
    sig: tuple[int, int]
    rows: int  # data rows counted when the file was checked
    records: Iterator[Record]
    report_path: Path
    report: TextIO
    read: int = 0
    outstanding: int = 0
    bad_rows: int = 0
    eof: bool = False
    note: str | None = None  # why reading stopped early

    def close(self) -> None:
        close = getattr(self.records, "close", None)
        if close is not None:
            close()  # a generator: its `with open(...)` closes the file
        if not self.report.closed:
            self.report.close()


@dataclass
class _Out:
    """A row handed out and not yet settled."""

    item: Incoming
    file: _File
    row: int
    problems: list[str] = field(default_factory=list)


class FormSource:
    """Every row of every complete export file in the folder is one incoming item."""

    def __init__(self, config: FormConfig, clock: Clock | None = None, settle: float = 5.0) -> None:
        self.name = config.name
        self.config = config
        self.path = config.path
        self.clock = clock or SystemClock()
        self.settle = settle  # seconds a file must have kept its size and mtime
        self.columns = _Columns(config)
        self.last_error: str | None = None
        self._seen: dict[str, _Seen] = {}
        self._files: dict[str, _File] = {}  # opened and not yet moved away, by name
        self._reading: _File | None = None
        self._out: dict[str, _Out] = {}  # by label, in the order handed out
        self._held: _Out | None = None  # a row whose key is already in the batch

    # -- what the operator sees ---------------------------------------------------------------

    def describe(self) -> str:
        return f"forms {self.path} (format {self.config.format})"

    def check(self) -> str:
        if not self.path.is_dir():
            return f"FAILED: folder missing ({self.path})"
        if "email" not in self.config.columns:
            return "FAILED: columns.email is not set; no row could become a case"
        return f"ok, {len(self._candidates())} file(s) waiting in {self.path}"

    def backlog(self) -> int:
        """Rows still to hand out from opened files, plus one per file not opened yet."""
        if not self.path.is_dir():
            return 0
        rows = sum(f.rows - f.read for f in self._files.values())
        return rows + len(self._out) + len(self._candidates())

    # -- intake -------------------------------------------------------------------------------

    def fetch(self, limit: int) -> list[Incoming]:
        if not self.path.is_dir():
            self.last_error = f"folder missing: {self.path}"
            return []
        self.last_error = None
        if self._out:  # the last batch was never settled (its poll failed): offer it again
            return [out.item for out in list(self._out.values())[:limit]]
        keys: set[str] = set()
        while len(self._out) < limit:
            out = self._held or self._next_row()
            self._held = None
            if out is None:
                break
            if out.item.key in keys:
                # The same submission twice in one batch would be two "new" items; hand it
                # out next time, when the first is committed and the database knows it.
                self._held = out
                break
            keys.add(out.item.key)
            self._out[out.item.label] = out  # at once: a failure below loses no row
        return [out.item for out in self._out.values()]

    def settle_batch(self, settled: list[tuple[Incoming, str]]) -> None:
        touched: dict[str, _File] = {}
        for item, outcome in settled:
            out = self._out.pop(item.label, None)
            if out is None:
                continue
            file = out.file
            file.outstanding -= 1
            self._report(out, outcome)
            touched[file.name] = file
        for file in touched.values():
            self._finish_if_done(file)

    # -- rows -----------------------------------------------------------------------------------

    def _next_row(self) -> _Out | None:
        while True:
            file = self._reading or self._open_next()
            if file is None:
                return None
            try:
                record = next(file.records, None)
            except Exception as exc:  # the file changed under us since it was checked
                file.note = f"reading stopped after row {file.read}: {type(exc).__name__}: {exc}"
                record = None
            if record is None:
                file.eof = True
                self._reading = None
                self._finish_if_done(file)
                continue
            file.read += 1
            return self._row(file, *record)

    def _row(self, file: _File, n: int, cells: list[tuple[str, Any]], problems: list[str]) -> _Out:
        fields, extra, submission_id = self.columns.split(cells)
        problems = problems + row_problems(fields, self.columns.mapped)
        raw = json.dumps(
            {"file": file.name, "row": n, "fields": fields, "extra": extra, "problems": problems},
            ensure_ascii=False,
        ).encode("utf-8")
        item = Incoming(
            source=self.name,
            key=row_key(fields, extra, submission_id),
            raw=raw,
            label=f"{file.name} row {n}",
            kind="form",
        )
        file.outstanding += 1
        return _Out(item=item, file=file, row=n, problems=problems)

    def _report(self, out: _Out, outcome: str) -> None:
        file = out.file
        problems = out.problems or (
            [f"set aside by the pipeline ({outcome})"]
            if outcome in ("quarantined", "ignored")
            else []
        )
        if not problems:
            return
        file.bad_rows += 1
        writer = csv.writer(file.report)
        for problem in problems:
            writer.writerow([out.row, spreadsheet_safe(problem), spreadsheet_safe(outcome)])

    # -- files ----------------------------------------------------------------------------------

    def _candidates(self) -> list[os.DirEntry[str]]:
        """Export files in the folder, oldest first: not being written by name, not opened."""
        found = []
        with os.scandir(self.path) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith(SKIP_PREFIXES) or name.lower().endswith(SKIP_SUFFIXES):
                    continue
                if name in self._files or not entry.is_file():
                    continue
                found.append(entry)
        found.sort(key=lambda e: (e.stat().st_mtime_ns, e.name))
        return found

    def _stable(self, entry: os.DirEntry[str], now: float) -> bool:
        """Unchanged for `settle` seconds: by two polls, or already by its own mtime."""
        st = entry.stat()
        sig = (st.st_size, st.st_mtime_ns)
        seen = self._seen.get(entry.name)
        if seen is None or seen.sig != sig:
            seen = self._seen[entry.name] = _Seen(sig, now)
        quiet_since = min(seen.since, st.st_mtime)
        return now - quiet_since >= self.settle

    def _open_next(self) -> _File | None:
        now = time.time()
        candidates = self._candidates()
        present = {e.name for e in candidates}
        for name in [n for n in self._seen if n not in present]:
            del self._seen[name]  # gone, or opened meanwhile
        for entry in candidates:
            if not self._stable(entry, now):
                continue
            file = self._open(entry)
            if file is not None:
                return file
        return None

    def _open(self, entry: os.DirEntry[str]) -> _File | None:
        """Check the whole file and open its reader; a file that cannot be read goes to failed/."""
        path = Path(entry.path)
        st = entry.stat()
        fmt = self.config.format
        if fmt == "auto":
            fmt = FORMAT_OF_SUFFIX.get(path.suffix.lower(), "")
        try:
            if not fmt:
                raise FileProblem(
                    f"cannot tell the format of {path.suffix or 'a name without extension'} "
                    "(format = auto knows .csv .tsv .json .jsonl .ndjson .xlsx)"
                )
            records, rows = self._check(path, fmt)
        except FileProblem as exc:
            self._fail(path, str(exc))
            return None
        except Exception as exc:  # noqa: BLE001 - a reader's bug must not stop the folder
            log.exception("event=form.check_error source=%s file=%s", self.name, path.name)
            self._fail(path, f"unreadable: {type(exc).__name__}: {exc}")
            return None
        processed = self.path / "processed"
        processed.mkdir(exist_ok=True)
        report_path = processed / f".{path.name}.report.partial"
        report = open(report_path, "w", encoding="utf-8-sig", newline="")  # noqa: SIM115
        csv.writer(report).writerow(REPORT_HEADER)
        file = _File(
            name=path.name,
            path=path,
            sig=(st.st_size, st.st_mtime_ns),
            rows=rows,
            records=records,
            report_path=report_path,
            report=report,
        )
        self._files[file.name] = file
        self._seen.pop(file.name, None)
        self._reading = file
        logfmt.event(log, "form.file.open", source=self.name, file=file.name, rows=rows, format=fmt)
        return file

    def _check(self, path: Path, fmt: str) -> tuple[Iterator[Record], int]:
        columns = self.columns
        if fmt == "csv":
            layout, rows = check_csv(path, columns)
            return iter(_Table(_csv_rows(path, layout))), rows
        if fmt in ("json", "jsonl"):
            encoding, rows = check_json(path, columns, lines=fmt == "jsonl")
            reader = _jsonl_records if fmt == "jsonl" else _json_records
            return reader(path, encoding), rows
        rows = check_xlsx(path, columns, self.config.sheet)
        table = _Table(_xlsx_rows(path, self.config.sheet), short_rows=False)
        return iter(table), rows

    def _finish_if_done(self, file: _File) -> None:
        held = self._held is not None and self._held.file is file
        if not file.eof or file.outstanding or held:
            return
        file.close()
        del self._files[file.name]
        try:
            st = os.stat(file.path)
            now_sig: tuple[int, int] | None = (st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            now_sig = None
        if now_sig is not None and now_sig != file.sig:
            # Replaced or rewritten while we read it: read the new one from the start (rows
            # already taken in are known by their keys and change nothing).
            file.report_path.unlink(missing_ok=True)
            logfmt.event(
                log, "form.file.changed", logging.WARNING, source=self.name, file=file.name
            )
            return
        if file.note:
            with open(file.report_path, "a", encoding="utf-8", newline="") as fh:
                csv.writer(fh).writerow([file.read + 1, spreadsheet_safe(file.note), "not read"])
        target = self._target(self.path / "processed", file.name)
        os.replace(file.report_path, target.with_name(target.name + ".report.csv"))
        if now_sig is not None:
            os.replace(file.path, target)
        logfmt.event(
            log,
            "form.file.processed",
            source=self.name,
            file=file.name,
            rows=file.read,
            bad_rows=file.bad_rows,
            moved_to=target.name,
        )

    def _fail(self, path: Path, problem: str) -> None:
        target = self._target(self.path / "failed", path.name)
        os.replace(path, target)
        target.with_name(target.name + ".error.txt").write_text(
            f"file: {path.name}\nform: {self.name}\nproblem: {problem}\n", encoding="utf-8"
        )
        self._seen.pop(path.name, None)
        logfmt.event(
            log,
            "form.file.failed",
            logging.WARNING,
            source=self.name,
            file=path.name,
            problem=problem,
            moved_to=target.name,
        )

    def _target(self, folder: Path, name: str) -> Path:
        """<folder>/<UTC time>-<name>, not overwriting an earlier file of the same name."""
        folder.mkdir(exist_ok=True)
        stamp = self.clock.now().strftime("%Y%m%dT%H%M%SZ")
        target, n = folder / f"{stamp}-{name}", 2
        while target.exists():
            target, n = folder / f"{stamp}-{n}-{name}", n + 1
        return target
