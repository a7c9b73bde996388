"""One sheet of an XLSX workbook as a stream of rows, within limits no file can talk us out of.

openpyxl builds a whole <row> element before it hands the row out and loads every shared string
at once: one row of 180M empty cells, or one 1.5 GB string, exhausts memory. Here expat reads the
decompressed XML a chunk at a time, and nothing it holds grows with the file.

What no spreadsheet program writes makes the workbook bad (BadWorkbook, the file goes to
failed/): a row of more than MAX_COLUMNS cells or a cell beyond column XFD, a row beyond
MAX_ROWS, a dimension beyond either, more than MAX_CELLS cells, a DTD, parts past their sizes.
What a consumer can type makes one row bad: a cell of more than MAX_CELL_CHARS characters
(Excel's own limit), a row of more than MAX_ROW_CHARS; that row is dropped, passed over up to
its </row> without Python seeing its cells, and comes out as (number, None, [why]).

Shared strings go to a temporary file (only their offsets stay in memory). NUL and the other
characters XML forbids are dropped from the stream: one in a cell costs nothing but itself.
Number formats come from openpyxl's stylesheet reader: a date cell is a date, as openpyxl
gives it.
"""

from __future__ import annotations

import os
import posixpath
import re
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any
from xml.parsers import expat

MAX_COLUMNS = 16_384  # XFD, a spreadsheet's last column
MAX_ROWS = 1_048_576  # a spreadsheet's last row
MAX_CELLS = 50_000_000  # cells in one sheet: a bound on the time one file can take
MAX_CELL_CHARS = 32_767  # Excel's own limit for the text of one cell
MAX_ROW_CHARS = 1 << 20  # all cells of one row together
MAX_PART_BYTES = 2 << 30  # the decompressed XML of the sheet, or of the shared strings
MAX_META_BYTES = 16 << 20  # workbook.xml, the relationships, styles.xml
MAX_SHARED_STRINGS = 5_000_000
MAX_SHARED_BYTES = 512 << 20
CHUNK = 64 * 1024

Row = tuple[int, list[Any] | None, list[str]]  # (row number, values or None: skipped, problems)

_FORBIDDEN_BYTES = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20)])
_FORBIDDEN_REFS = re.compile(
    rb"&#(?:[xX]0*(?:[0-8bBcCeEfF]|1[0-9a-fA-F]|[fF]{3}[eEfF])|0*(?:[0-8]|1[124-9]|2\d|3[01]|6553[45]));"
)
_CELL_REF = re.compile(r"\$?([A-Za-z]+)\$?(\d*)")
_XSTRING_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")


class BadWorkbook(Exception):
    """The workbook cannot be read at all; str(exc) says why."""


# --- the workbook's parts ------------------------------------------------------------------


@dataclass
class Book:
    sheet: str  # the sheet's part name in the archive
    shared: str | None
    date_styles: frozenset[int] = frozenset()
    timedelta_styles: frozenset[int] = frozenset()
    date1904: bool = False
    names: list[str] = field(default_factory=list)


def _local(tag: str) -> str:
    return tag.rpartition("}")[2].rpartition(":")[2]


def _meta(archive: zipfile.ZipFile, name: str) -> ET.Element | None:
    """A small XML part, parsed; None when absent. Its size is bounded before it is parsed."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        return None
    with archive.open(info) as fh:
        data = fh.read(MAX_META_BYTES + 1)
    if len(data) > MAX_META_BYTES:
        raise BadWorkbook(f"{name} is larger than {MAX_META_BYTES >> 20} MiB")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise BadWorkbook(f"{name} declares a DTD, which no workbook does")
    try:
        return ET.fromstring(_clean(data))
    except ET.ParseError as exc:
        raise BadWorkbook(f"{name} is not well-formed XML: {exc}") from exc


def _rels(archive: zipfile.ZipFile, part: str) -> dict[str, tuple[str, str]]:
    """Relationship id -> (type's last word, target part name) of a part."""
    folder, name = posixpath.split(part)
    root = _meta(archive, posixpath.join(folder, "_rels", f"{name}.rels"))
    found = {}
    for rel in root if root is not None else ():
        target = rel.get("Target", "")
        if rel.get("TargetMode") == "External" or not target:
            continue
        path = target[1:] if target.startswith("/") else posixpath.join(folder, target)
        kind = rel.get("Type", "").rpartition("/")[2]
        found[rel.get("Id", "")] = (kind, posixpath.normpath(path))
    return found


def read_book(archive: zipfile.ZipFile, sheet: str | None) -> Book:
    """Where the wanted sheet (else the first worksheet) and the shared strings are."""
    office = [t for kind, t in _rels(archive, "").values() if kind == "officeDocument"]
    workbook_part = office[0] if office else "xl/workbook.xml"
    workbook = _meta(archive, workbook_part)
    if workbook is None:
        raise BadWorkbook(f"no workbook part ({workbook_part})")
    rels = _rels(archive, workbook_part)
    sheets: list[tuple[str, str]] = []
    date1904 = False
    for node in workbook.iter():
        tag = _local(node.tag)
        if tag == "workbookPr":
            date1904 = node.get("date1904", "").lower() in ("1", "true")
        elif tag == "sheet":
            rid = next((v for k, v in node.attrib.items() if _local(k) == "id"), "")
            kind, target = rels.get(rid, ("", ""))
            if kind == "worksheet":
                sheets.append((node.get("name", ""), target))
    names = [name for name, _ in sheets]
    wanted = [target for name, target in sheets if sheet is None or name == sheet]
    if not wanted:
        if sheet is None:
            raise BadWorkbook("no worksheet in the workbook")
        raise BadWorkbook(f"no sheet named {sheet!r} (sheets: {', '.join(names)})")
    shared = [t for kind, t in rels.values() if kind == "sharedStrings"]
    book = Book(sheet=wanted[0], shared=shared[0] if shared else None, date1904=date1904,
                names=names)  # fmt: skip
    styles = [t for kind, t in rels.values() if kind == "styles"]
    root = _meta(archive, styles[0]) if styles else None
    if root is not None:
        from openpyxl.styles.stylesheet import Stylesheet  # its number-format rules, not ours

        try:
            stylesheet = Stylesheet.from_tree(root)
        except Exception as exc:  # noqa: BLE001 - openpyxl raises many kinds for odd styles
            raise BadWorkbook(f"unreadable styles ({type(exc).__name__}: {exc})") from exc
        book.date_styles = frozenset(stylesheet.date_formats)
        book.timedelta_styles = frozenset(stylesheet.timedelta_formats)
    return book


# --- the XML stream ------------------------------------------------------------------------


def _clean(data: bytes) -> bytes:
    """The bytes without characters XML 1.0 forbids (a NUL in a cell), raw or as references."""
    data = data.translate(None, _FORBIDDEN_BYTES)
    return _FORBIDDEN_REFS.sub(b"", data) if b"&#" in data else data


def _chunks(fh: IO[bytes], part: str) -> Iterator[bytes]:
    """A part's decompressed bytes, cleaned, in chunks; a reference is never cut in two."""
    total, held = 0, b""
    first = True
    while True:
        chunk = fh.read(CHUNK)
        if first and chunk.startswith((b"\xff\xfe", b"\xfe\xff", b"<\x00", b"\x00<")):
            raise BadWorkbook(f"{part} is not UTF-8 XML")
        first = False
        total += len(chunk)
        if total > MAX_PART_BYTES:
            raise BadWorkbook(f"{part} is larger than {MAX_PART_BYTES >> 30} GiB uncompressed")
        if not chunk:
            if held:
                yield _clean(held)
            return
        data = held + chunk
        amp = data.rfind(b"&", max(0, len(data) - 16))
        data, held = (data[:amp], data[amp:]) if amp >= 0 else (data, b"")
        yield _clean(data)


def _parser(start: Callable[..., None], end: Callable[[str], None],
            text: Callable[[str], None]) -> Any:  # fmt: skip
    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.buffer_size = CHUNK
    parser.ordered_attributes = False

    def no_dtd(*_args: Any) -> None:
        raise BadWorkbook("the XML declares a DTD, which no workbook does")

    parser.StartDoctypeDeclHandler = no_dtd
    parser.EntityDeclHandler = no_dtd
    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.CharacterDataHandler = text
    return parser


def column_of(ref: str) -> int | None:
    """The column number of a cell reference ("AB12" -> 28), None if it is not one."""
    found = _CELL_REF.fullmatch(ref.strip())
    if found is None:
        return None
    letters = found.group(1).upper()
    if len(letters) > 3:
        return MAX_COLUMNS + 1
    number = 0
    for letter in letters:
        number = number * 26 + ord(letter) - 64
    return number


def _ref(column: int, row: int) -> str:
    """The A1-style name of a cell written without its reference: (4, 3) -> "D3"."""
    letters = ""
    while column:
        column, digit = divmod(column - 1, 26)
        letters = chr(65 + digit) + letters
    return f"{letters}{row}"


def _unescape(text: str) -> str:
    """OOXML's _xHHHH_ escapes (Excel writes a line break in a cell as _x000D_)."""
    if "_x" not in text:
        return text
    return _XSTRING_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)


class _Text:
    """Character data of one element, kept up to MAX_CELL_CHARS (then only counted)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0

    def add(self, data: str) -> None:
        self.size += len(data)
        if self.size <= MAX_CELL_CHARS:
            self.parts.append(data)

    @property
    def too_long(self) -> bool:
        return self.size > MAX_CELL_CHARS

    def value(self) -> str:
        return _unescape("".join(self.parts))


# --- shared strings ------------------------------------------------------------------------


class SharedStrings:
    """The workbook's shared strings in a temporary file; their end offsets in memory."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the reader
        self._ends = array("q")
        self._long: set[int] = set()
        self._size = 0

    def load(self, archive: zipfile.ZipFile, part: str) -> SharedStrings:
        text: _Text | None = None
        depth_rph, in_t = 0, False

        def start(name: str, _attrs: dict[str, str]) -> None:
            nonlocal text, depth_rph, in_t
            tag = name.rpartition(":")[2]
            if tag == "si":
                text, depth_rph = _Text(), 0
            elif tag == "rPh":
                depth_rph += 1
            elif tag == "t":
                in_t = True

        def end(name: str) -> None:
            nonlocal text, depth_rph, in_t
            tag = name.rpartition(":")[2]
            if tag == "rPh":
                depth_rph -= 1
            elif tag == "t":
                in_t = False
            elif tag == "si" and text is not None:
                self._add(text)
                text = None

        def chars(data: str) -> None:
            if text is not None and in_t and not depth_rph:
                text.add(data)  # the <t> runs, not the phonetic ones nor the space between

        parser = _parser(start, end, chars)
        try:
            with archive.open(part) as fh:
                for chunk in _chunks(fh, part):
                    parser.Parse(chunk, False)
                parser.Parse(b"", True)
        except expat.ExpatError as exc:
            raise BadWorkbook(f"{part} is not well-formed XML: {exc}") from exc
        self._file.flush()
        return self

    def _add(self, text: _Text) -> None:
        if len(self._ends) >= MAX_SHARED_STRINGS:
            raise BadWorkbook(f"more than {MAX_SHARED_STRINGS:,} shared strings")
        if text.too_long:
            self._long.add(len(self._ends))
            data = b""
        else:
            data = text.value().encode("utf-8", "surrogatepass")
        self._size += len(data)
        if self._size > MAX_SHARED_BYTES:
            raise BadWorkbook(f"shared strings larger than {MAX_SHARED_BYTES >> 20} MiB")
        self._file.write(data)
        self._ends.append(self._size)

    def get(self, index: int) -> str:
        """The string; ValueError naming the problem for a bad index or an overlong string."""
        if not 0 <= index < len(self._ends):
            raise ValueError(f"shared string {index} does not exist")
        if index in self._long:
            raise ValueError(f"more than {MAX_CELL_CHARS:,} characters")
        start = self._ends[index - 1] if index else 0
        data = os.pread(self._file.fileno(), self._ends[index] - start, start)
        return data.decode("utf-8", "surrogatepass")

    def close(self) -> None:
        self._file.close()


# --- the sheet -------------------------------------------------------------------------------


def _find_close(data: bytes, close: bytes) -> int | None:
    """Where the close tag `close` (b"</row") starts in data, None if it is not there whole."""
    start = 0
    while (at := data.find(close, start)) >= 0:
        after = at + len(close)
        if after < len(data) and data[after] in b" \t\r\n>":
            return at
        if after >= len(data):
            return None  # cut at the end: the caller keeps these bytes for the next chunk
        start = at + 1
    return None


class _Sheet:
    """expat's handlers for one sheet: rows finished so far wait in `ready`."""

    def __init__(self, book: Book, strings: SharedStrings | None) -> None:
        from openpyxl.utils.datetime import CALENDAR_MAC_1904, CALENDAR_WINDOWS_1900

        self.book, self.strings = book, strings
        self.epoch = CALENDAR_MAC_1904 if book.date1904 else CALENDAR_WINDOWS_1900
        self.ready: list[Row] = []
        self.rows = self.total = 0
        self.number = 0
        self.row_name: str | None = None  # the open <row>'s name as written ("row", "x:row")
        self.values: dict[int, Any] = {}
        self.problems: list[str] = []
        self.skipping = False
        self.cells = self.chars = self.column = 0
        self.cell: tuple[str, str | None, str] | None = None  # type, style, reference
        self.v: _Text | None = None
        self.f: _Text | None = None
        self.inline: _Text | None = None
        self.collect: _Text | None = None
        self.rph = 0

    # -- expat's handlers ---------------------------------------------------------------------

    def start(self, name: str, attrs: dict[str, str]) -> None:
        if self.skipping:
            return
        tag = name.rpartition(":")[2]
        if tag == "c" and self.row_name is not None:
            self.cells += 1
            self.total += 1
            if self.total > MAX_CELLS:
                raise BadWorkbook(f"more than {MAX_CELLS:,} cells in the sheet")
            ref = attrs.get("r")
            column = column_of(ref) if ref else self.column + 1
            if self.cells > MAX_COLUMNS:
                raise BadWorkbook(f"row {self.number:,} has more than {MAX_COLUMNS:,} cells")
            if column is None or column > MAX_COLUMNS:
                where = f"cell {(ref or '')[:20]!r} of row {self.number:,}"
                raise BadWorkbook(f"{where} is beyond a spreadsheet's last column (XFD)")
            self.column = column
            self.cell = (attrs.get("t", "n"), attrs.get("s"), ref or _ref(column, self.number))
            self.v = self.f = self.inline = self.collect = None
            self.rph = 0
        elif self.cell is None:
            if tag == "row":
                self._open_row(name, attrs.get("r", ""))
            elif tag == "dimension":
                self._dimension(attrs.get("ref", ""))
        elif tag == "v":
            self.v = self.collect = _Text()
        elif tag == "f":
            self.f = self.collect = _Text()
        elif tag == "is":
            self.inline = _Text()
        elif tag == "t" and self.inline is not None and not self.rph:
            self.collect = self.inline
        elif tag == "rPh":
            self.rph += 1

    def end(self, name: str) -> None:
        if name == self.row_name:
            return self._close_row()
        if self.skipping:
            return
        tag = name.rpartition(":")[2]
        if tag in ("v", "f", "t"):
            self.collect = None
        elif tag == "rPh":
            self.rph -= 1
        elif tag == "c" and self.cell is not None:
            self._close_cell()

    def text(self, data: str) -> None:
        if self.collect is None or self.skipping:
            return
        self.collect.add(data)
        if self.collect.too_long and self.cell is not None:
            self._bad(f"cell {self.cell[2]} has more than {MAX_CELL_CHARS:,} characters")

    # -- rows and cells -----------------------------------------------------------------------

    def _bad(self, problem: str) -> None:
        """The row breaks a limit: forget it and pass over the rest of it unseen."""
        self.problems.append(problem)
        self.skipping = True
        self.values = {}
        self.cell = self.collect = None

    def _open_row(self, name: str, ref: str) -> None:
        number = int(ref) if ref.isdigit() and len(ref) <= 7 else self.number + 1
        self.rows += 1
        if number > MAX_ROWS or self.rows > MAX_ROWS:
            raise BadWorkbook(f"row {number:,} is beyond a spreadsheet's {MAX_ROWS:,} rows")
        self.number, self.row_name = number, name
        self.values, self.problems, self.skipping = {}, [], False
        self.cells = self.chars = self.column = 0

    def _close_row(self) -> None:
        if self.skipping:
            values = None
        else:
            width = max(self.values, default=0)
            values = [self.values.get(c) for c in range(1, width + 1)]
        self.ready.append((self.number, values, self.problems))
        self.row_name, self.values, self.skipping = None, {}, False
        self.cell = self.collect = None

    def _close_cell(self) -> None:
        assert self.cell is not None
        ref = self.cell[2]
        try:
            value = self._value()
        except ValueError as exc:
            return self._bad(f"cell {ref}: {exc}")
        self.cell = None
        if value is None:
            return
        self.chars += len(value) if isinstance(value, str) else 1
        if self.chars > MAX_ROW_CHARS:
            return self._bad(f"more than {MAX_ROW_CHARS:,} characters in the row")
        self.values[self.column] = value

    def _value(self) -> Any:
        """A cell's value as openpyxl reads it with data_only=False: formulas as "=..." text."""
        assert self.cell is not None
        kind, style, _ref = self.cell
        if self.f is not None and self.f.size:
            return "=" + self.f.value()
        if kind == "inlineStr":
            return self.inline.value() if self.inline is not None else None
        text = self.v.value() if self.v is not None else ""
        if not text:
            return None
        if kind == "n":
            return self._number(text, int(style) if style and style.isdigit() else 0)
        if kind == "s":
            if self.strings is None:
                raise ValueError("a shared string, but the workbook has none")
            if not text.strip().isdigit() or len(text) > 12:
                raise ValueError(f"shared string index {text[:20]!r}")
            return self.strings.get(int(text))
        if kind == "b":
            return text.strip() in ("1", "true")
        if kind == "d":
            from openpyxl.utils.datetime import from_ISO8601

            try:
                return from_ISO8601(text)
            except ValueError:
                return text
        return text

    def _number(self, text: str, style: int) -> Any:
        from openpyxl.utils.datetime import from_excel

        try:
            number: int | float = float(text) if any(c in text for c in ".eE") else int(text)
        except ValueError:
            return text
        if style not in self.book.date_styles:
            return number
        try:
            return from_excel(number, self.epoch, timedelta=style in self.book.timedelta_styles)
        except (OverflowError, ValueError):
            return "#VALUE!"

    def _dimension(self, ref: str) -> None:
        for corner in ref.split(":"):
            found = _CELL_REF.fullmatch(corner.strip())
            if found is None:
                continue
            column = column_of(corner) or 0
            row = found.group(2)
            if column > MAX_COLUMNS or len(row) > 7 or (row and int(row) > MAX_ROWS):
                raise BadWorkbook(
                    f"its dimension {ref[:40]!r} is beyond a spreadsheet's {MAX_COLUMNS:,} "
                    f"columns and {MAX_ROWS:,} rows"
                )

    # -- the stream ---------------------------------------------------------------------------

    def read(self, fh: IO[bytes], part: str) -> Iterator[Row]:
        """The sheet's rows; a row being skipped goes through expat with no handler set."""
        parser = _parser(self.start, self.end, self.text)
        held = b""
        try:
            for chunk in _chunks(fh, part):
                data, held = held + chunk, b""
                if self.skipping and self.row_name is not None:
                    close = b"</" + self.row_name.encode("utf-8")
                    at = _find_close(data, close)
                    if at is None:
                        cut = max(0, len(data) - len(close))
                        self._unseen(parser, data[:cut])
                        data, held = b"", data[cut:]
                    else:
                        self._unseen(parser, data[:at])
                        data = data[at:]
                parser.Parse(data, False)
                yield from self._take()
            parser.Parse(held, True)
        except expat.ExpatError as exc:
            raise BadWorkbook(f"{part} is not well-formed XML: {exc}") from exc
        yield from self._take()

    def _take(self) -> list[Row]:
        ready, self.ready = self.ready, []
        return ready

    def _unseen(self, parser: Any, data: bytes) -> None:
        """Feed expat bytes of a skipped row at C speed: no Python call per cell."""
        if not data:
            return
        parser.StartElementHandler = parser.EndElementHandler = None
        parser.CharacterDataHandler = None
        try:
            parser.Parse(data, False)
        finally:
            parser.StartElementHandler, parser.EndElementHandler = self.start, self.end
            parser.CharacterDataHandler = self.text


def sheet_rows(path: str | os.PathLike[str], sheet: str | None) -> Iterator[Row]:
    """The rows of the named sheet (else the first worksheet), streamed within the limits."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BadWorkbook(f"damaged XLSX workbook: {exc}") from exc
    with archive:
        book = read_book(archive, sheet)
        strings = None
        try:
            if book.shared is not None and book.shared in archive.NameToInfo:
                strings = SharedStrings().load(archive, book.shared)
            if book.sheet not in archive.NameToInfo:
                raise BadWorkbook(f"the sheet's part {book.sheet} is missing")
            with archive.open(book.sheet) as fh:
                yield from _Sheet(book, strings).read(fh, book.sheet)
        finally:
            if strings is not None:
                strings.close()
