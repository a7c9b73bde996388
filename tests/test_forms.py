"""Web-form exports: the readers (daemon/sources/formfiles.py), the folder source
(daemon/sources/forms.py), the row step (handlers/forms.py), the request_info templates, and end
to end through the App (app.build_sources builds a FormSource for each [[forms]] entry).

Fixtures are generated here (GBK and BOM CSVs, JSON, JSONL, XLSX, truncated and binary files).
"""

from __future__ import annotations

import csv
import email
import io
import json
import os
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import openpyxl
import pytest
from sqlalchemy import func, select

from daemon import config as configmod
from daemon.app import Summary
from daemon.clock import MovableClock
from daemon.config import FormConfig
from daemon.items import Incoming
from daemon.sources import formfiles
from daemon.sources.formfiles import row_key
from daemon.sources.forms import FormSource
from daemon.spreadsheet import spreadsheet_safe
from handlers.context import Prepared
from handlers.forms import ParseFormRow, check_email, missing_essentials
from handlers.notify import Templates
from handlers.pipeline import prepare

COLUMNS = {
    "email": "邮箱",
    "name": "姓名",
    "phone": "电话",
    "description": "投诉内容",
    "order_number": "订单号",
    "respondent": "被投诉方",
    "purchase_date": "购买日期",
    "amount": "金额",
}
HEADER = [
    "提交编号",
    "姓名",
    "邮箱",
    "电话",
    "被投诉方",
    "订单号",
    "购买日期",
    "金额",
    "投诉内容",
    "提交时间",
]
ROWS = [
    ["1001", "张三", "zhangsan@example.cn", "13800000001", "某某电器有限公司", "A1001",
     "2026-11-01", "399.00", "电饭煲用了三天就坏了，要求退货退款。", "2026-11-20 10:00"],
    ["1002", "李四", "lisi@example.cn", "", "快递公司", "A1002", "2026-11-02", "58",
     "快递延误十天，客服不理，要求赔偿。", "2026-11-20 11:00"],
    ["1003", "王五", "wangwu@example.cn", "", "某商城", "A1003", "2026-11-03", "1,200",
     "商品与描述不符，虚假宣传。", "2026-11-20 12:00"],
]  # fmt: skip


def form(tmp_path: Path, **overrides: Any) -> FormConfig:
    folder = tmp_path / "forms" / "web"
    folder.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {
        "name": "web",
        "path": folder,
        "format": "auto",
        "id_column": "提交编号",
        "columns": dict(COLUMNS),
    }
    values.update(overrides)
    return FormConfig(**values)


def aged(path: Path, seconds: float = 60) -> Path:
    """A file that has sat in the folder for a while (complete, as far as anyone can tell)."""
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def write_csv(
    path: Path,
    rows: Iterable[list[str]],
    *,
    encoding: str = "utf-8",
    delimiter: str = ",",
    header: list[str] = HEADER,
) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_bytes(buf.getvalue().encode(encoding))
    return aged(path)


def write_xlsx(path: Path, header: list[str], rows: list[list[Any]], sheet: str = "Sheet1") -> Path:
    book = openpyxl.Workbook()
    ws = book.active
    assert ws is not None
    ws.title = "说明"
    ws.append(["这一页不是数据"])
    data = book.create_sheet(sheet)
    data.append(header)
    for row in rows:
        data.append(row)
    book.save(path)
    return aged(path)


Outcome = Callable[[dict[str, Any]], str]


def drain(source: FormSource, limit: int = 100, outcome: Outcome | None = None) -> list[Incoming]:
    """Fetch and settle until the source is dry, as App.poll would; every item handed out."""
    seen: list[Incoming] = []
    while True:
        items = source.fetch(limit)
        if not items:
            return seen
        assert len(items) <= limit
        seen += items
        source.settle_batch([(i, (outcome or _outcome)(row(i))) for i in items])


def _outcome(data: dict[str, Any]) -> str:
    email_ok = check_email(data["fields"].get("email"))[0] is not None
    return "ticket" if email_ok else "quarantined"


def row(item: Incoming) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(item.raw)
    return data


def report(folder: Path, name: str) -> list[list[str]]:
    (path,) = (folder / "processed").glob(f"*-{name}.report.csv")
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.reader(fh))


# --- formats -------------------------------------------------------------------------------


def test_gbk_csv_from_excel_is_read_with_chinese_headers(tmp_path: Path) -> None:
    cfg = form(tmp_path)
    header = [" 提交编号 ", "姓名", "邮箱 ", "电话", "被投诉方", "订单号", "购买日期", "金额"]
    header += ["投诉内容", "提交时间"]
    write_csv(cfg.path / "导出.csv", ROWS, encoding="gbk", header=header)
    items = drain(FormSource(cfg))

    assert [i.key for i in items] == ["1001", "1002", "1003"]
    assert [i.label for i in items] == ["导出.csv row 2", "导出.csv row 3", "导出.csv row 4"]
    assert all(i.kind == "form" and i.source == "web" for i in items)
    first = row(items[0])
    assert first["fields"] == {
        "name": "张三",
        "email": "zhangsan@example.cn",
        "phone": "13800000001",
        "respondent": "某某电器有限公司",
        "order_number": "A1001",
        "purchase_date": "2026-11-01",
        "amount": "399.00",
        "description": "电饭煲用了三天就坏了，要求退货退款。",
    }
    assert first["extra"] == {"提交编号": "1001", "提交时间": "2026-11-20 10:00"}
    assert first["problems"] == [] and first["row"] == 2 and first["file"] == "导出.csv"
    assert row(items[2])["fields"]["amount"] == "1,200"  # quoted comma survives
    assert (cfg.path / "processed").is_dir() and not (cfg.path / "导出.csv").exists()


def test_utf8_bom_csv_and_gb18030_only_characters(tmp_path: Path) -> None:
    cfg = form(tmp_path)
    rows = [ROWS[0][:8] + ["买的䶮牌热水器漏水 €", "x"]]
    write_csv(cfg.path / "bom.csv", rows, encoding="utf-8-sig")
    write_csv(cfg.path / "gb18030.csv", [ROWS[1][:8] + ["䶮牌热水器漏水", "x"]], encoding="gb18030")
    items = drain(FormSource(cfg))
    texts = {row(i)["file"]: row(i)["fields"]["description"] for i in items}
    assert texts == {"bom.csv": "买的䶮牌热水器漏水 €", "gb18030.csv": "䶮牌热水器漏水"}
    assert "提交编号" in row(items[0])["extra"]  # the BOM is not part of the first header


def test_semicolon_csv_with_english_headers_in_any_case(tmp_path: Path) -> None:
    cfg = form(
        tmp_path,
        id_column=None,
        columns={"email": "Email", "name": "Name", "description": "Complaint", "demand": "Demand"},
    )
    header = ["NAME", " e-mail ", "complaint ", "demand", "Shop"]
    header[1] = " EMAIL "
    rows = [
        ["Ann Lee", "ann@example.com", "The kettle leaks; it is a week old.", "refund", "KettleCo"],
        ["Bob Ray", "bob@example.com", "Charged twice, 19,99 each", "refund", "ShopX"],
    ]
    write_csv(cfg.path / "survey.csv", rows, delimiter=";", header=header)
    items = drain(FormSource(cfg))
    first = row(items[0])
    assert first["fields"]["description"] == "The kettle leaks; it is a week old."
    assert first["fields"]["email"] == "ann@example.com"
    assert first["fields"]["demand"] == "refund"
    assert first["extra"] == {"Shop": "KettleCo"}
    assert row(items[1])["fields"]["description"] == "Charged twice, 19,99 each"
    assert all(i.key.startswith("sha256:") for i in items)


def test_json_array_and_json_lines_exports(tmp_path: Path) -> None:
    cfg = form(tmp_path)
    objects = [dict(zip(HEADER, r, strict=True)) for r in ROWS]
    objects[0]["金额"] = 399.5  # type: ignore[assignment]
    objects[1]["提交编号"] = 1002  # type: ignore[assignment]
    objects[1]["附件"] = ["a.jpg", "b.jpg"]  # type: ignore[assignment]
    (cfg.path / "a.json").write_text(json.dumps(objects, ensure_ascii=False, indent=2), "utf-8")
    aged(cfg.path / "a.json")
    lines = "\n".join(json.dumps(o, ensure_ascii=False) for o in objects[:2]) + "\n\n"
    (cfg.path / "b.jsonl").write_text(lines, encoding="utf-8")
    aged(cfg.path / "b.jsonl", 30)
    items = drain(FormSource(cfg))
    by_file: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_file.setdefault(row(item)["file"], []).append(row(item))
    assert [r["row"] for r in by_file["a.json"]] == [1, 2, 3]
    assert [r["row"] for r in by_file["b.jsonl"]] == [1, 2]
    assert by_file["a.json"][0]["fields"]["amount"] == "399.5"
    assert by_file["a.json"][1]["extra"]["附件"] == '["a.jpg", "b.jpg"]'
    # the same submission in two files (and as 1002 or "1002") has one key
    assert [i.key for i in items] == ["1001", "1002", "1003", "1001", "1002"]


def test_xlsx_with_chinese_headers_on_a_named_sheet(tmp_path: Path) -> None:
    from datetime import datetime

    cfg = form(tmp_path, sheet="投诉")
    rows: list[list[Any]] = [list(r) for r in ROWS]
    rows[0][6] = datetime(2026, 11, 1)
    rows[0][7] = 399.0
    rows[1][7] = 58.5
    rows[2][8] = '=HYPERLINK("http://evil.example","点我")'
    rows.append([None] * len(HEADER))  # Excel's formatted-but-empty row
    write_xlsx(cfg.path / "导出.xlsx", HEADER, rows, sheet="投诉")
    items = drain(FormSource(cfg))
    assert [i.key for i in items] == ["1001", "1002", "1003"]
    assert [row(i)["row"] for i in items] == [2, 3, 4]
    first = row(items[0])["fields"]
    assert first["purchase_date"] == "2026-11-01" and first["amount"] == "399"
    assert row(items[1])["fields"]["amount"] == "58.5"
    # a formula is kept as the text given, never evaluated
    assert row(items[2])["fields"]["description"].startswith("=HYPERLINK(")


def test_a_missing_sheet_or_email_column_fails_the_file(tmp_path: Path) -> None:
    cfg = form(tmp_path, sheet="没有这页")
    write_xlsx(cfg.path / "a.xlsx", HEADER, [ROWS[0]])
    write_csv(cfg.path / "b.csv", [["x", "y"]], header=["姓名", "手机"])
    assert drain(FormSource(cfg)) == []
    errors = {p.name: p.read_text() for p in (cfg.path / "failed").glob("*.error.txt")}
    assert len(errors) == 2
    text = "\n".join(errors.values())
    assert "no sheet named '没有这页'" in text
    assert "no email column '邮箱'" in text


# --- idempotency -----------------------------------------------------------------------------


def test_cumulative_export_repeats_keys_never_file_names(tmp_path: Path) -> None:
    cfg = form(tmp_path, id_column=None)
    write_csv(cfg.path / "export-1.csv", ROWS[:2])
    first = drain(FormSource(cfg))
    spaced = [[f" {v} " if v else v for v in ROWS[0]], ROWS[1], ROWS[2]]  # re-exported, re-spaced
    write_csv(cfg.path / "export-2.csv", spaced)
    second = drain(FormSource(cfg))
    assert [i.key for i in second[:2]] == [i.key for i in first]
    assert second[2].key not in {i.key for i in first}
    assert all(i.key.startswith("sha256:") and "export" not in i.key for i in second)
    # a value that changed is a different submission
    changed = dict(zip(["email", "description"], ["zhangsan@example.cn", "别的投诉"], strict=True))
    assert row_key(changed, {}, None) != row_key({**changed, "description": "别的投诉。"}, {}, None)
    assert row_key({"amount": "12.50"}, {}, None) == row_key({"amount": "12.5"}, {}, None)


def test_the_same_submission_twice_in_one_file_is_never_in_one_batch(tmp_path: Path) -> None:
    cfg = form(tmp_path)
    write_csv(cfg.path / "dup.csv", [ROWS[0], ROWS[0], ROWS[1]])
    source = FormSource(cfg)
    batches = []
    while items := source.fetch(100):
        batches.append([i.key for i in items])
        source.settle_batch([(i, "ticket") for i in items])
    assert batches == [["1001"], ["1001", "1002"]]


def test_an_unsettled_batch_is_offered_again(tmp_path: Path) -> None:
    """A poll that failed before settling (database down) loses no row."""
    cfg = form(tmp_path)
    write_csv(cfg.path / "a.csv", ROWS)
    source = FormSource(cfg)
    first = source.fetch(2)
    assert source.fetch(2) == first
    source.settle_batch([(i, "ticket") for i in first])
    rest = source.fetch(2)
    assert [i.key for i in rest] == ["1003"]


# --- files: partial, broken, finished ----------------------------------------------------------


def test_files_being_written_are_not_taken(tmp_path: Path) -> None:
    cfg = form(tmp_path)
    for name in ("export.csv.tmp", "export.csv.part", "x.crdownload", ".export.csv", "~$导出.xlsx"):
        write_csv(cfg.path / name, ROWS[:1])
    fresh = cfg.path / "fresh.csv"
    write_csv(fresh, ROWS[:1])
    os.utime(fresh)  # just written: not yet known to be complete
    clock = MovableClock(datetime.fromtimestamp(fresh.stat().st_mtime, UTC))
    source = FormSource(cfg, clock, settle=1.0)
    assert source.fetch(100) == []
    assert source.check() == f"ok, 1 file(s) waiting in {cfg.path}"
    # the exporter's rename from .tmp to the final name makes it a candidate
    os.replace(cfg.path / "export.csv.tmp", cfg.path / "export.csv")
    items = drain(source)
    assert {row(i)["file"] for i in items} == {"export.csv"}
    clock.move(timedelta(seconds=1.05))  # two polls, a second apart, saw fresh.csv unchanged
    assert {row(i)["file"] for i in drain(source)} == {"fresh.csv"}
    assert (cfg.path / "export.csv.part").exists() and (cfg.path / "~$导出.xlsx").exists()


def test_a_file_copied_in_slowly_is_read_once_whole(tmp_path: Path) -> None:
    cfg = form(tmp_path)
    rows = [[str(5000 + i), f"用户{i}", f"u{i}@example.cn", "", "某店", f"B{i}", "2026-11-01",
             "10", f"第{i}条投诉：商品有质量问题。" * 5, ""] for i in range(600)]  # fmt: skip
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows([HEADER, *rows])
    data = buf.getvalue().encode("gbk")
    size = len(data) // 10 + 1
    chunks = [data[i : i + size] for i in range(0, len(data), size)]  # 10 chunks over 2 s
    target = cfg.path / "slow.csv"
    finished = threading.Event()

    def copy() -> None:
        with open(target, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)  # cut anywhere, also inside a GBK character
                fh.flush()
                time.sleep(0.2)
        finished.set()

    source = FormSource(cfg, settle=1.0)  # the daemon's default is 5 s
    writer = threading.Thread(target=copy)
    writer.start()
    got: list[Incoming] = []
    started = time.monotonic()
    while time.monotonic() - started < 8 and (not finished.is_set() or not got or source._files):
        items = source.fetch(250)
        if items:
            assert finished.is_set(), "read while the copy was still being written"
            got += items
            source.settle_batch([(i, "ticket") for i in items])
        time.sleep(0.05)
    writer.join()
    assert [i.key for i in got] == [str(5000 + i) for i in range(600)]
    assert not list((cfg.path).glob("*.csv")) and not (cfg.path / "failed").exists()


def test_unreadable_files_go_to_failed_and_the_folder_goes_on(tmp_path: Path) -> None:
    cfg = form(tmp_path)
    folder = cfg.path
    write_xlsx(folder / "whole.xlsx", HEADER, [ROWS[0]])
    data = (folder / "whole.xlsx").read_bytes()
    aged(folder / "whole.xlsx").rename(folder / "cut.xlsx")
    (folder / "cut.xlsx").write_bytes(data[: len(data) // 2])
    (folder / "image.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (folder / "zip.csv").write_bytes(data)
    text = json.dumps([dict(zip(HEADER, r, strict=True)) for r in ROWS], ensure_ascii=False)
    (folder / "cut.json").write_text(text[: len(text) - 40], encoding="utf-8")
    (folder / "bad.json").write_text('[{"邮箱": "a@example.cn",}]', encoding="utf-8")
    lines = [json.dumps(dict(zip(HEADER, r, strict=True)), ensure_ascii=False) for r in ROWS]
    (folder / "cut.jsonl").write_text("\n".join(lines)[:-15], encoding="utf-8")
    csv_text = "\r\n".join(",".join(r) for r in [HEADER, *ROWS])
    (folder / "cut.csv").write_bytes(csv_text.encode("gbk")[:-30])
    (folder / "quote.csv").write_text(",".join(HEADER) + '\r\n1,"张三,a@b.cn\r\n', "utf-8")
    (folder / "empty.csv").write_bytes(b"")
    (folder / "notes.txt").write_text("not an export")
    write_csv(folder / "good.csv", ROWS[:1])
    for path in folder.iterdir():
        if path.is_file():
            aged(path)

    items = drain(FormSource(cfg))
    assert [row(i)["file"] for i in items] == ["good.csv"]
    errors = {
        p.name.split("-", 1)[1].removesuffix(".error.txt"): p.read_text()
        for p in (folder / "failed").glob("*.error.txt")
    }
    assert set(errors) == {
        "cut.xlsx", "image.csv", "zip.csv", "cut.json", "bad.json", "cut.jsonl", "cut.csv",
        "quote.csv", "empty.csv", "notes.txt",
    }  # fmt: skip
    assert "truncated" in errors["cut.xlsx"]
    assert "binary data" in errors["image.csv"]
    assert "ZIP archive" in errors["zip.csv"]
    assert "truncated JSON" in errors["cut.json"]
    assert "invalid JSON" in errors["bad.json"]
    assert "truncated" in errors["cut.jsonl"]
    assert "truncated" in errors["cut.csv"]
    assert "truncated" in errors["quote.csv"]
    assert "empty file" in errors["empty.csv"]
    assert "cannot tell the format" in errors["notes.txt"]
    for name in errors:  # each failed file is kept beside its error
        assert len(list((folder / "failed").glob(f"*-{name}"))) == 1
    assert [p.name for p in folder.iterdir() if p.is_file()] == []


def test_bad_rows_are_reported_and_the_file_moves_after_its_last_row(tmp_path: Path) -> None:
    cfg = form(tmp_path)
    rows = [list(r) for r in ROWS]
    rows[0][2] = ""  # no email
    rows[1][2] = "lisi(at)example.cn"  # not an address
    rows[2][2] = "ＷＡＮＧ＠ＥＸＡＭＰＬＥ．ＣＮ"  # full width: fine
    rows[2][8] = ""  # but nothing to say
    rows.append(["1004", "", "=1+2@x.cn", "", "", "", "", "", '=HYPERLINK("http://x")', ""])
    rows.append(["1005", "赵六", "zhao@example.cn", "", "某店", "A1005", "", "", "屏幕碎了", ""])
    write_csv(cfg.path / "mixed.csv", rows)
    source = FormSource(cfg)
    items = source.fetch(3)
    assert (cfg.path / "mixed.csv").exists()
    source.settle_batch([(i, _outcome(row(i))) for i in items])
    rest = source.fetch(100)
    assert len(rest) == 2 and (cfg.path / "mixed.csv").exists()  # read, not yet settled
    source.settle_batch([(i, _outcome(row(i))) for i in rest])
    assert not (cfg.path / "mixed.csv").exists()

    problems = {row(i)["row"]: row(i)["problems"] for i in items + rest}
    assert problems[2] == ["missing email"]
    assert problems[3] == ["invalid email: no @"]
    assert problems[4] == ["empty description"]
    assert problems[5] == ["missing name", "missing respondent", "missing purchase details "
                           "(order number, date or amount)"]  # fmt: skip
    assert problems[6] == []
    assert row(rest[0])["fields"]["description"] == '=HYPERLINK("http://x")'  # stored as given

    (moved,) = (cfg.path / "processed").glob("*-mixed.csv")
    assert moved.name[:16].endswith("Z") and moved.name[8] == "T"
    lines = report(cfg.path, "mixed.csv")
    assert lines[0] == ["row", "problem", "outcome"]
    assert ["2", "missing email", "quarantined"] in lines
    assert ["3", "invalid email: no @", "quarantined"] in lines
    assert ["4", "empty description", "ticket"] in lines
    assert sum(1 for line in lines if line[0] == "5") == 3
    assert not any(line[0] == "6" for line in lines)


def test_every_csv_we_write_is_neutralised_against_formulas() -> None:
    assert spreadsheet_safe("=1+2") == "'=1+2"
    assert spreadsheet_safe("+86 138") == "'+86 138"
    assert spreadsheet_safe("-5") == "'-5"
    assert spreadsheet_safe("@SUM(A1)") == "'@SUM(A1)"
    assert spreadsheet_safe("张三") == "张三"
    assert spreadsheet_safe(None) == ""


def _peak_while_draining(folder: Path, n: int) -> int:
    """Peak Python memory while one n-row CSV is fetched and settled 200 rows at a time."""
    cfg = form(folder)
    path = cfg.path / "big.csv"
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        for i in range(n):
            text = "电饭煲坏了，要求退货退款。" * 3
            writer.writerow([str(i), f"用户{i}", f"u{i}@example.cn", "13800000000", "某某电器",
                             f"A{i}", "2026-11-01", "399", text, ""])  # fmt: skip
    aged(path)
    source = FormSource(cfg)
    count = 0
    tracemalloc.start()
    try:
        while items := source.fetch(200):
            assert len(items) <= 200
            if count == 0:
                assert source.backlog() == n  # n - 200 to read, 200 out and unsettled
            count += len(items)
            source.settle_batch([(i, "ticket") for i in items])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == n
    return peak


def test_streaming_hands_out_at_most_limit_with_memory_flat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(formfiles, "CHUNK", 16 * 1024)  # both files are many chunks long
    small = _peak_while_draining(tmp_path / "small", 1500)
    large = _peak_while_draining(tmp_path / "large", 6000)  # 1.2 MB
    assert large < small + 32 * 1024, (small, large)  # four times the rows, the same memory


def test_check_and_backlog(tmp_path: Path) -> None:
    missing = FormSource(form(tmp_path, path=tmp_path / "nowhere"))
    assert missing.check().startswith("FAILED: folder missing")
    assert missing.fetch(10) == [] and missing.last_error
    assert missing.backlog() == 0
    cfg = form(tmp_path)
    source = FormSource(cfg)
    assert source.check() == f"ok, 0 file(s) waiting in {cfg.path}"
    write_csv(cfg.path / "a.csv", ROWS)
    write_csv(cfg.path / "b.csv", ROWS)
    assert source.check() == f"ok, 2 file(s) waiting in {cfg.path}" and source.backlog() == 2
    source.fetch(1)
    assert source.backlog() == 2 + 1 + 1  # two rows of a.csv to go, one out, b.csv
    no_email = FormSource(form(tmp_path, columns={"name": "姓名"}))
    assert no_email.check().startswith("FAILED: columns.email")


# --- the row step ----------------------------------------------------------------------------


def _config(tmp_path: Path, forms_toml: str = "") -> configmod.Config:
    path = tmp_path / "caseloop.toml"
    path.write_text('data_dir = "d"\n' + forms_toml, encoding="utf-8")
    return configmod.load(path)


FORMS_TOML = """
[[forms]]
name = "web"
path = "forms/web"
id_column = "提交编号"
[forms.columns]
email = "邮箱"
name = "姓名"
phone = "电话"
description = "投诉内容"
order_number = "订单号"
respondent = "被投诉方"
purchase_date = "购买日期"
amount = "金额"
demand = "诉求"
"""


def _prepared(fields: dict[str, str], extra: dict[str, str] | None = None, key: str = "1001"):  # type: ignore[no-untyped-def]
    raw = {"file": "a.csv", "row": 2, "fields": fields, "extra": extra or {}, "problems": []}
    item = Incoming("web", key, json.dumps(raw, ensure_ascii=False).encode(), "a.csv row 2", "form")
    return Prepared(item=item, language="zh-CN")


def test_a_form_row_becomes_a_message_with_registration_fields(tmp_path: Path) -> None:
    config = _config(tmp_path, FORMS_TOML)
    fields = dict(zip(["name", "email", "phone", "respondent", "order_number", "purchase_date",
                       "amount", "description"], ROWS[0][1:9], strict=True))  # fmt: skip
    fields["demand"] = "退货退款"
    prep = _prepared(fields, {"提交编号": "1001", "提交时间": "2026-11-20 10:00"})
    ParseFormRow().process(prep, config, blobs=None)  # type: ignore[arg-type]
    assert not prep.stopped
    msg = prep.message
    assert msg is not None
    assert msg.from_address == "zhangsan@example.cn" and msg.from_name == "张三"
    assert msg.subject == "某某电器有限公司: 电饭煲用了三天就坏了，要求退货退款。"
    assert msg.message_id is None  # known by source and key, not by an id mail can carry
    assert msg.date is None and msg.attachments == () and dict(msg.headers) == {}
    assert msg.text.startswith("电饭煲用了三天就坏了，要求退货退款。\n\n诉求：退货退款\n\n")
    assert "订单号：A1001" in msg.text and "来源：web 表单，a.csv 第 2 行" in msg.text
    assert prep.channel == "form" and prep.language == "zh-CN"
    assert prep.fields == {
        "phone": "13800000001",
        "respondent": "某某电器有限公司",
        "order_number": "A1001",
        "purchase_date": "2026-11-01",
        "amount": "399.00",
        "demand": "退货退款",
        "extra": {"提交编号": "1001", "提交时间": "2026-11-20 10:00"},
    }
    assert prep.missing == [] and prep.raw_sha256 is not None


def test_an_english_row_under_chinese_headers_is_english(tmp_path: Path) -> None:
    config = _config(tmp_path, FORMS_TOML)
    prep = _prepared(
        {
            "email": "ann@example.com",
            "description": "Broken phone, want refund",
            "respondent": "深圳某某科技有限公司",
        },
        {"提交编号": "1", "提交时间": "2026-11-20", "来源渠道": "官网"},
    )
    ParseFormRow().process(prep, config, blobs=None)  # type: ignore[arg-type]
    assert prep.language == "en"
    assert prep.message is not None and "Respondent: 深圳某某科技有限公司" in prep.message.text
    assert prep.missing == ["name", "purchase"]


def test_a_form_row_is_classified_on_its_words_not_its_labelled_columns(tmp_path: Path) -> None:
    # "Burns" is a safety word and "Price" a category word; in the name column they are neither.
    config = _config(tmp_path, FORMS_TOML)
    fields = {
        "name": "Robert Burns",
        "email": "rb@example.com",
        "respondent": "Price Parcels Ltd",
        "order_number": "FIRE-99",
        "description": "My parcel is two weeks late and the courier never answers.",
    }
    prep = prepare(_prepared(fields).item, config, None)  # type: ignore[arg-type]
    assert prep.message is not None and "Name: Robert Burns" in prep.message.text
    assert (prep.category, prep.priority) == ("logistics", "normal")
    # The same word in the description is the consumer's own: urgent.
    fields["description"] = "The heater burns and sparks."
    burnt = prepare(_prepared(fields).item, config, None)  # type: ignore[arg-type]
    assert burnt.priority == "urgent"


def test_missing_essentials_count_only_what_the_form_collects() -> None:
    assert missing_essentials({"email": "a@b.cn"}, ["email"]) == ["name", "description"]
    assert missing_essentials({}, ["respondent", "amount"]) == [
        "name",
        "respondent",
        "purchase",
        "description",
    ]
    assert missing_essentials({"amount": "3"}, ["order_number", "amount"]) == [
        "name",
        "description",
    ]


def test_a_row_without_usable_email_is_quarantined_with_its_problems(tmp_path: Path) -> None:
    config = _config(tmp_path, FORMS_TOML)
    prep = _prepared({"email": "lisi(at)example.cn", "description": "x"})
    raw = json.loads(prep.item.raw)
    raw["problems"] = ["invalid email: no @", "missing name"]
    prep = Prepared(item=Incoming("web", "k", json.dumps(raw).encode(), "a.csv row 2", "form"))
    ParseFormRow().process(prep, config, blobs=None)  # type: ignore[arg-type]
    assert prep.outcome == "quarantined"
    assert prep.reason == "a.csv row 2: invalid email: no @; missing name"
    assert prep.raw_sha256 is not None  # the row is kept in source_items for staff

    junk = Prepared(item=Incoming("web", "k", b"\xff not json", "a.csv row 9", "form"))
    ParseFormRow().process(junk, config, blobs=None)  # type: ignore[arg-type]
    assert junk.outcome == "quarantined" and "not a form row" in (junk.reason or "")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("zhangsan@example.cn", "zhangsan@example.cn"),
        (" Zhang.San+shop@Example.CN ", "Zhang.San+shop@example.cn"),
        ("张三＠ｅｘａｍｐｌｅ．ｃｎ", "张三@example.cn"),
        ("mailto:a@qq.com", "a@qq.com"),
        ("张三 <a@163.com>", "a@163.com"),
        ("a@例子.中国", "a@例子.中国"),
        ("", None),
        ("a@b", None),
        ("a@@b.cn", None),
        ("a b@c.cn", None),
        ("a@b.cn; c@d.cn", None),
        ("a@-b.cn", None),
        ("a..b@c.cn", None),
        ("@c.cn", None),
        ("a@c.123", None),
    ],
)
def test_check_email(value: str, expected: str | None) -> None:
    assert check_email(value)[0] == expected


@pytest.mark.parametrize("language", ["zh-CN", "en"])
def test_request_info_names_the_missing_items_in_the_consumers_language(
    tmp_path: Path, language: str
) -> None:
    config = _config(tmp_path)
    ticket = SimpleNamespace(number="TS-20261124-0007", complainant_name=None, channel="form")
    mail = Templates(config).render(
        "request_info",
        language,
        ticket=ticket,
        missing=["respondent", "purchase"],
        policy=config.sla.policy("normal"),
        original_subject="某店: 屏幕碎了",
    )
    words = {
        "zh-CN": ("请补充", "被投诉方", "订单号", "您的姓名"),
        "en": ("complete", "the business", "order number", "your full name"),
    }[language]
    assert words[0] in mail.subject and "某店: 屏幕碎了" in mail.subject
    for text in (mail.text, mail.html):
        assert words[1] in text and words[2] in text and words[3] not in text
        assert "[TS-20261124-0007]" in text
    assert "<li>" in mail.html


# --- end to end through the App ---------------------------------------------------------------

APP_TOML = FORMS_TOML.replace('path = "forms/web"', 'path = "forms/web"\nformat = "auto"')


def _drop(app: Any, name: str, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    folder: Path = app.config.forms[0].path
    folder.mkdir(parents=True, exist_ok=True)
    return write_csv(folder / name, rows, encoding="gbk", header=header)


def _outbox(app: Any) -> list[email.message.EmailMessage]:
    folder = app.config.outbox_dir / "new"
    return [
        email.message_from_bytes(p.read_bytes(), policy=policy.default)  # type: ignore[misc]
        for p in sorted(folder.iterdir())
    ]


def test_cumulative_exports_through_the_app_give_one_case_and_one_ack_each(make_app) -> None:
    from daemon.store.models import OutboxMessage, SourceItem, Ticket

    app = make_app(APP_TOML)
    bad = ["1009", "无邮箱", "", "", "某店", "A9", "", "", "没有邮箱的投诉", ""]
    _drop(app, "export-1.csv", [ROWS[0], bad])
    first = app.run_once()
    _drop(app, "export-1-again.csv", [ROWS[0], bad])
    _drop(app, "export-2.csv", [ROWS[0], bad, ROWS[1], ROWS[2]])
    second = app.run_once()

    assert len(first.opened) == 1 and len(second.opened) == 2
    with app.sessions() as session:
        tickets = session.scalars(select(Ticket).order_by(Ticket.id)).all()
        assert [t.channel for t in tickets] == ["form"] * 3
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 3
        items = dict(session.execute(select(SourceItem.key, SourceItem.outcome)).all())
        reason = session.scalar(select(SourceItem.reason).where(SourceItem.key == "1009"))
    assert items == {"1001": "ticket", "1002": "ticket", "1003": "ticket", "1009": "quarantined"}
    assert reason == "export-1.csv row 3: missing email"
    assert [how for _, _, how, _ in first.set_aside] == ["quarantined"]
    mails = _outbox(app)
    assert sorted(m["To"] for m in mails) == sorted(r[2] for r in ROWS)
    assert all(m["Auto-Submitted"] == "auto-replied" for m in mails)

    folder: Path = app.config.forms[0].path
    assert sorted(p.name.split("-", 1)[1] for p in (folder / "processed").glob("*.csv")) == [
        "export-1-again.csv", "export-1-again.csv.report.csv", "export-1.csv",
        "export-1.csv.report.csv", "export-2.csv", "export-2.csv.report.csv",
    ]  # fmt: skip
    for name in ("export-1.csv", "export-1-again.csv", "export-2.csv"):
        assert ["3", "missing email", "quarantined"] in report(folder, name)
    again = app.run_once()
    assert again.opened == [] and again.sent == 0


def test_a_form_case_shows_its_fields_in_the_case_json(make_app) -> None:
    from daemon.store.models import Ticket
    from daemon.views import ticket_json

    app = make_app(APP_TOML)
    _drop(app, "a.csv", [ROWS[0]])
    app.run_once()
    with app.sessions() as session:
        case = ticket_json(
            session.scalars(select(Ticket)).one(), app.config.timezone, timeline=True
        )
    assert case["channel"] == "form" and case["status"] == "received"
    assert case["complainant"] == {
        "name": "张三",
        "email": "zhangsan@example.cn",
        "phone": "13800000001",
    }
    assert case["respondent"] == "某某电器有限公司"
    assert case["extra"] == {
        "order_number": "A1001",
        "purchase_date": "2026-11-01",
        "amount": "399.00",
        "extra": {"提交编号": "1001", "提交时间": "2026-11-20 10:00"},
    }
    assert case["language"] == "zh-CN" and case["category"] == "product_quality"
    assert case["timeline"][0]["text"].startswith("电饭煲用了三天就坏了")
    (ack,) = _outbox(app)
    assert ack["Subject"].startswith(f"[{case['number']}] 我们已收到您的投诉")


def test_a_form_row_missing_essentials_opens_a_case_and_asks_for_them(make_app) -> None:
    from daemon.store.models import OutboxMessage, Ticket

    app = make_app(APP_TOML)
    partial = ["2001", "", "zhao@example.cn", "", "", "", "", "", "屏幕碎了，要求换货。", ""]
    english = ["2002", "Ann Lee", "ann@example.com", "", "深圳某某电器有限公司", "", "", "",
               "Kettle leaks, shop ignores me", ""]  # fmt: skip
    _drop(app, "a.csv", [partial, english])
    app.run_once()
    with app.sessions() as session:
        tickets = {t.complainant_email: t for t in session.scalars(select(Ticket))}
        kinds = dict(session.execute(select(OutboxMessage.recipient, OutboxMessage.kind)).all())
        assert {t.status for t in tickets.values()} == {"received"}
        assert tickets["ann@example.com"].language == "en"
    assert kinds == {"zhao@example.cn": "request_info", "ann@example.com": "request_info"}
    mails = {m["To"]: m for m in _outbox(app)}
    zh = mails["zhao@example.cn"].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "您的姓名" in zh and "被投诉方" in zh and "订单号" in zh
    en = mails["ann@example.com"].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "order number" in en and "your full name" not in en
    assert "Please complete your complaint" in mails["ann@example.com"]["Subject"]


def test_the_consumers_email_reply_threads_onto_the_form_case(make_app) -> None:
    from email.message import EmailMessage

    from daemon.maildirs import deliver_to_maildir
    from daemon.store.models import Ticket, TimelineEntry

    app = make_app(APP_TOML)
    _drop(app, "a.csv", [ROWS[0]])
    app.run_once()
    (ack,) = _outbox(app)
    reply = EmailMessage()
    reply["From"] = "张三 <zhangsan@example.cn>"
    reply["To"] = ack["Reply-To"]
    reply["Subject"] = f"回复: {ack['Subject']}"
    reply["Message-ID"] = "<reply-1@example.cn>"
    reply["In-Reply-To"] = ack["Message-ID"]
    reply["Date"] = "Tue, 24 Nov 2026 10:30:00 +0800"
    reply.set_content("订单截图在附件里。")
    inbox = app.config.mailboxes[0].path
    deliver_to_maildir(inbox, reply.as_bytes(), name="reply")
    summary = app.run_once()
    assert summary.opened == [] and summary.outcomes["entry"] == 1
    with app.sessions() as session:
        ticket = session.scalars(select(Ticket)).one()
        entries = session.scalars(
            select(TimelineEntry).where(TimelineEntry.ticket_id == ticket.id)
        ).all()
    assert [e.kind for e in entries][-1] == "message_in"
    assert entries[-1].message_id == "<reply-1@example.cn>" and not entries[-1].internal


def test_old_submissions_are_registered_without_an_acknowledgement(make_app) -> None:
    """With `submitted_at` mapped, ack_max_age applies to form rows as to mail: a first import
    of last year's export registers every case and mails none of those consumers."""
    from daemon.store.models import Ticket

    app = make_app(APP_TOML + 'submitted_at = "提交时间"\n')
    recent = [*ROWS[1][:9], "2026-11-24 09:30"]  # half an hour before the clock
    _drop(app, "history.csv", [ROWS[0], recent, [*ROWS[2][:9], "not a time"]])
    summary = app.run_once()

    assert len(summary.opened) == 3
    with app.sessions() as session:
        extra = dict(session.execute(select(Ticket.complainant_email, Ticket.extra)).all())
    assert extra["zhangsan@example.cn"]["submitted_at"] == "2026-11-20T02:00:00+00:00"
    assert sorted(m["To"] for m in _outbox(app)) == ["lisi@example.cn", "wangwu@example.cn"]
    assert any("older than ack_max_age" in n for n in summary.notes)
    assert any("unreadable submission time" in n for n in summary.notes)


def test_a_big_export_is_summarised_with_counts_and_every_note_is_logged(
    make_app, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """run --once over a large export lists the first items and counts the rest, rather than
    holding and printing one line per row; the notes it leaves out are in the log."""
    from daemon.cli import print_summary

    app = make_app(APP_TOML + 'submitted_at = "提交时间"\n')
    no_email = [[f"9{i:03d}", "某人", "", "", "某店", "", "", "", "坏了", ""] for i in range(70)]
    unreadable = [[f"8{i:03d}", "张三", f"u{i}@example.cn", "", f"店{i}", "A1", "2026-11-01", "9",
                   "坏了，要求退款。", "not a time"] for i in range(60)]  # fmt: skip
    _drop(app, "big.csv", no_email + unreadable)
    with caplog.at_level("INFO", logger="caseloop"):
        summary = app.run_once()

    assert summary.outcomes["ticket"] == 60 and summary.outcomes["quarantined"] == 70
    assert len(summary.set_aside) == Summary.DETAILS and len(summary.opened) == Summary.DETAILS
    assert summary.left_out["set_aside"] == 70 - Summary.DETAILS
    assert summary.left_out["notes"] == 60 - Summary.DETAILS
    logged = [r.getMessage() for r in caplog.records if "event=intake.note" in r.getMessage()]
    assert len(logged) == 60 and all("unreadable submission time" in m for m in logged)
    print_summary(summary, app)
    out = capsys.readouterr().out
    assert "cases opened: 60 (" in out and out.count("quarantined: web/") == Summary.DETAILS
    assert f"... and {70 - Summary.DETAILS} more set aside" in out
    assert f"... and {60 - Summary.DETAILS} more notes" in out


def test_a_long_backlog_moves_delivery_beside_intake_and_loses_nothing(
    make_app, caplog: pytest.LogCaptureFixture
) -> None:
    """run --once over a long export (full batches two rounds running) writes the outbox in a
    process beside intake when there is a second core; a short run delivers in turn."""
    from daemon.app import App
    from daemon.store.models import OutboxMessage

    configured = make_app(APP_TOML + "\n[intake]\nbatch_size = 5\n")
    app = App(configured.config)  # the system clock, which a child process shares

    def rows(first: int, n: int) -> list[list[str]]:
        return [[f"{i}", "张三", f"c{i}@example.cn", "", f"店{i}", f"A{i}", "2026-11-01", "9",
                 "电饭煲坏了，要求退款。", ""] for i in range(first, first + n)]  # fmt: skip

    try:
        _drop(app, "short.csv", rows(0, 3))
        with caplog.at_level("INFO", logger="caseloop"):
            short = app.run_once()
        assert short.sent == 3 and "event=run.delivery_aside" not in caplog.text
        _drop(app, "long.csv", rows(100, 40))
        with caplog.at_level("INFO", logger="caseloop"):
            long = app.run_once()
        with app.sessions() as session:
            statuses = session.scalars(select(OutboxMessage.status)).all()
    finally:
        app.close()
    assert long.outcomes["ticket"] == 40 and long.sent == 40 and long.not_sent == 0
    assert statuses == ["sent"] * 43
    assert sorted(m["To"] for m in _outbox(app)) == sorted(
        f"c{i}@example.cn" for i in [*range(3), *range(100, 140)]
    )
    aside = "event=run.delivery_aside" in caplog.text
    assert aside == ((os.cpu_count() or 1) > 1)
