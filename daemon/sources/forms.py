"""A web-form export folder: CSV, JSON, JSON Lines and XLSX files, one incoming item per row.

A file is taken only once it is complete: names of files still being written (.tmp, .part,
.crdownload, hidden, Excel's ~$ lock files) are skipped, and a file must have kept its size and
mtime for `settle` seconds, seen across two polls or told by its own mtime. It is then checked
whole by daemon/sources/formfiles.py (the readers); a file that cannot be read at all goes to
failed/ with a .error.txt naming the problem. A readable file is streamed: an open reader is
kept across fetch() calls and at most `limit` rows are handed out per call.

A row's key is its id_column value, else a sha256 of its normalised mapped values; never the
file's name, so a row repeated by a later cumulative export is known to the database already and
changes nothing. After the last row of a file has been settled, the file moves to
processed/<UTC time>-<name> beside a .report.csv listing its bad rows: rows with problems, with
their outcome, and rows past a reader's limits (too many cells, an overlong value), "skipped"
unread and never handed out. Every CSV written here is neutralised against formula injection
(spreadsheet_safe).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from daemon import log as logfmt
from daemon.clock import Clock, SystemClock
from daemon.config import FormConfig
from daemon.items import Incoming
from daemon.sources.formfiles import (
    FORMAT_OF_SUFFIX,
    Columns,
    FileProblem,
    Record,
    open_records,
    row_key,
)
from daemon.spreadsheet import spreadsheet_safe
from handlers.forms import row_problems

log = logging.getLogger("caseloop.forms")

SKIP_PREFIXES = (".", "~$")
SKIP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".download", ".filepart")
REPORT_HEADER = ("row", "problem", "outcome")


@dataclass
class _Seen:
    """A candidate file's size and mtime, and since when (the clock's, as a timestamp)."""

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
        self.columns = Columns(config)
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
            n, cells, problems = record
            if cells is None:  # past a limit, left unread: in the report, never handed out
                file.bad_rows += 1
                writer = csv.writer(file.report)
                for problem in problems:
                    writer.writerow([n, spreadsheet_safe(problem), "skipped"])
                logfmt.event(log, "form.row.skipped", logging.WARNING, source=self.name,
                             file=file.name, row=n, problem="; ".join(problems))  # fmt: skip
                continue
            return self._row(file, n, cells, problems)

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
        now = self.clock.now().timestamp()
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
            records, rows = open_records(path, fmt, self.columns, self.config.sheet)
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
