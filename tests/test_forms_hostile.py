"""Web-form exports built to hurt: rows and strings past every limit, NUL bytes, forged ids.

The readers (daemon/sources/formfiles.py, daemon/sources/xlsxstream.py) hold limits while they
stream; a row past one is reported and skipped, a file no spreadsheet program writes goes to
failed/, and the rows around either are read as ever. Form rows are known by their source and
row key: a mail carrying the Message-ID a row once had changes nothing for the row. Hostile
workbooks are written here as raw ZIP/XML, streamed, never committed.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import subprocess
import time
import zipfile
from collections.abc import Iterable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from cli_run import caseloop_argv, caseloop_env
from sqlalchemy import select

from daemon.sources.forms import FormSource
from daemon.sources.xlsxstream import MAX_CELL_CHARS
from daemon.store.models import OutboxMessage, SourceItem, Ticket

COLUMNS = {"email": "邮箱", "name": "姓名", "description": "投诉内容"}
HEADER = ["提交编号", "姓名", "邮箱", "投诉内容"]
HONEST = [
    ["1001", "张三", "zhangsan@example.cn", "电饭煲用了三天就坏了，要求退货退款。"],
    ["1002", "李四", "lisi@example.cn", "快递延误十天，客服不理，要求赔偿。"],
]
FORM_TOML = '[[forms]]\nname = "web"\npath = "forms/web"\nid_column = "提交编号"\n' + (
    "[forms.columns]\n" + "".join(f'{field} = "{header}"\n' for field, header in COLUMNS.items())
)


def aged(path: Path) -> Path:
    then = time.time() - 60
    os.utime(path, (then, then))
    return path


def form_source(folder: Path) -> FormSource:
    from daemon.config import FormConfig

    folder.mkdir(parents=True, exist_ok=True)
    return FormSource(
        FormConfig(name="web", path=folder, format="auto", id_column="提交编号", columns=COLUMNS)
    )


def drain(source: FormSource) -> list[dict[str, Any]]:
    """Every row handed out (as its JSON), each settled as a case."""
    rows = []
    while items := source.fetch(100):
        rows += [json.loads(i.raw) for i in items]
        source.settle_batch([(i, "ticket") for i in items])
    return rows


def report(folder: Path, name: str) -> list[list[str]]:
    (path,) = (folder / "processed").glob(f"*-{name}.report.csv")
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.reader(fh))


def failed(folder: Path) -> dict[str, str]:
    return {
        p.name.split("-", 1)[1].removesuffix(".error.txt"): p.read_text(encoding="utf-8")
        for p in (folder / "failed").glob("*.error.txt")
    }


# --- hand-made workbooks ---------------------------------------------------------------------

_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
    'relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-'
    'officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-'
    'officedocument.spreadsheetml.worksheet+xml"/></Types>'
)
_RELS = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>'
)
_WORKBOOK = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
    '<sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'
)
_REL = '<Relationship Id="{id}" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/{kind}" Target="{target}"/>'  # noqa: E501
_SHEET_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
)


def inline_row(number: int, values: Iterable[str]) -> bytes:
    cells = "".join(
        f'<c t="inlineStr"><is><t xml:space="preserve">{v}</t></is></c>' for v in values
    )
    return f'<row r="{number}">{cells}</row>'.encode()


def write_workbook(
    path: Path,
    rows: Iterable[bytes],
    shared: Iterable[bytes] | None = None,
    dimension: str | None = None,
) -> Path:
    """An XLSX whose sheet XML is `rows` (chunks of bytes, streamed into the ZIP as they come)
    and whose shared strings, when given, are the <si> chunks of `shared`."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", _CONTENT_TYPES)
        archive.writestr("_rels/.rels", _RELS)
        archive.writestr("xl/workbook.xml", _WORKBOOK)
        rels = [_REL.format(id="rId1", kind="worksheet", target="worksheets/sheet1.xml")]
        if shared is not None:
            rels.append(_REL.format(id="rId2", kind="sharedStrings", target="sharedStrings.xml"))
            with archive.open("xl/sharedStrings.xml", "w", force_zip64=True) as fh:
                fh.write(
                    b'<?xml version="1.0" encoding="UTF-8"?><sst xmlns="http://schemas.'
                    b'openxmlformats.org/spreadsheetml/2006/main">'
                )
                for chunk in shared:
                    fh.write(chunk)
                fh.write(b"</sst>")
        archive.writestr(
            "xl/_rels/workbook.xml.rels",
            '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.'
            'openxmlformats.org/package/2006/relationships">' + "".join(rels) + "</Relationships>",
        )
        with archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as fh:
            fh.write(_SHEET_HEAD.encode())
            if dimension:
                fh.write(f'<dimension ref="{dimension}"/>'.encode())
            fh.write(b"<sheetData>")
            for chunk in rows:
                fh.write(chunk)
            fh.write(b"</sheetData></worksheet>")
    return aged(path)


def empty_cells(count: int, per_chunk: int = 1 << 20) -> Iterable[bytes]:
    while count > 0:
        n = min(count, per_chunk)
        yield b"<c/>" * n
        count -= n


def wide_row(number: int, cells: int) -> Iterable[bytes]:
    """A row of `cells` empty cells: 20M of them compress to a few hundred KB."""
    yield f'<row r="{number}">'.encode()
    yield from empty_cells(cells)
    yield b"</row>"


def write_csv(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow(header)
        writer.writerows(rows)
    return aged(path)


# --- XLSX ------------------------------------------------------------------------------------


def test_a_row_of_more_cells_than_a_spreadsheet_has_fails_only_its_file(tmp_path: Path) -> None:
    folder = tmp_path / "web"
    source = form_source(folder)
    rows = [inline_row(1, HEADER), inline_row(2, HONEST[0]), *wide_row(3, 200_000)]
    write_workbook(folder / "wide.xlsx", rows)
    write_workbook(folder / "far.xlsx", [inline_row(1, HEADER), b'<row r="2"><c r="XFE2"/></row>'])
    write_workbook(folder / "dim.xlsx", [inline_row(1, HEADER)], dimension="A1:ZZZZ9")
    write_csv(folder / "honest.csv", HONEST)
    got = drain(source)
    assert [(r["file"], r["fields"]["email"]) for r in got] == [
        ("honest.csv", "zhangsan@example.cn"),
        ("honest.csv", "lisi@example.cn"),
    ]
    errors = failed(folder)
    assert "row 3 has more than 16,384 cells" in errors["wide.xlsx"]
    assert "beyond a spreadsheet's last column (XFD)" in errors["far.xlsx"]
    assert "dimension 'A1:ZZZZ9' is beyond" in errors["dim.xlsx"]
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == []


def test_an_overlong_string_skips_its_row_and_the_rest_is_read(tmp_path: Path) -> None:
    """A shared string past Excel's 32,767 characters (the one observed was 1.5 GB): its row
    is reported and skipped, the rows after it become cases; inline strings alike."""
    folder = tmp_path / "web"
    source = form_source(folder)
    huge = (b"x" * (1 << 20) for _ in range(8))  # 8 MiB in one <t>, streamed
    shared = [b"<si><t>", *huge, b"</t></si>", "<si><t>王五</t></si>".encode()]
    rows = [
        inline_row(1, HEADER),
        inline_row(2, HONEST[0]),
        b'<row r="3"><c t="inlineStr"><is><t>1003</t></is></c><c t="s"><v>1</v></c>'
        b'<c t="inlineStr"><is><t>wangwu@example.cn</t></is></c><c t="s"><v>0</v></c></row>',
        inline_row(4, ["1004", "赵六", "zhao@example.cn", "y" * (MAX_CELL_CHARS + 1)]),
        inline_row(5, HONEST[1]),
    ]
    write_workbook(folder / "long.xlsx", rows, shared=shared)
    got = drain(source)
    assert [r["row"] for r in got] == [2, 5]
    lines = report(folder, "long.xlsx")
    assert ["3", "cell D3: more than 32,767 characters", "skipped"] in lines
    assert ["4", "cell D4 has more than 32,767 characters", "skipped"] in lines
    assert not list(folder.glob("*.xlsx")) and not (folder / "failed").exists()


def test_nul_and_other_forbidden_characters_in_a_cell_are_dropped(tmp_path: Path) -> None:
    folder = tmp_path / "web"
    source = form_source(folder)
    rows = [
        inline_row(1, HEADER),
        b'<row r="2"><c t="inlineStr"><is><t>1001</t></is></c><c t="inlineStr"><is><t>'
        + "张\x00三".encode()
        + b'</t></is></c><c t="inlineStr"><is><t>zhangsan@example.cn&#0;</t></is></c>'
        b'<c t="inlineStr"><is><t>bad&#x1;kettle&#11;</t></is></c></row>',
        inline_row(3, HONEST[1]),
    ]
    write_workbook(folder / "nul.xlsx", rows)
    (folder / "nul.csv").write_bytes(
        "提交编号,姓名,邮箱,投诉内容\r\n2001,A\x00nn,ann@example.com,kettle\x00 leaks\r\n".encode()
    )
    aged(folder / "nul.csv")
    got = {r["fields"]["email"]: r["fields"] for r in drain(source)}
    assert got["zhangsan@example.cn"]["name"] == "张三"
    assert got["zhangsan@example.cn"]["description"] == "badkettle"
    assert got["lisi@example.cn"]["name"] == "李四"
    assert got["ann@example.com"] == {
        "email": "ann@example.com",
        "name": "Ann",
        "description": "kettle leaks",
    }
    assert not (folder / "failed").exists()


def test_dates_numbers_and_shared_strings_read_as_openpyxl_wrote_them(tmp_path: Path) -> None:
    from datetime import datetime

    import openpyxl

    folder = tmp_path / "web"
    source = form_source(folder)
    book = openpyxl.Workbook()
    ws = book.active
    assert ws is not None
    ws.append([*HEADER, "日期", "金额", "换行"])
    ws.append([*HONEST[0], datetime(2026, 11, 1, 9, 30), 399.5, "第一行\r\n第二行"])
    ws.append([1002, "李四", "lisi@example.cn", True, datetime(2026, 11, 2), 58, None])
    book.save(folder / "book.xlsx")
    aged(folder / "book.xlsx")
    got = drain(source)
    assert got[0]["extra"] == {
        "提交编号": "1001", "日期": "2026-11-01 09:30:00", "金额": "399.5", "换行": "第一行\n第二行"
    }  # fmt: skip
    assert got[1]["fields"]["description"] == "TRUE"
    assert got[1]["extra"] == {"提交编号": "1002", "日期": "2026-11-02", "金额": "58"}


# --- CSV -------------------------------------------------------------------------------------


def test_a_csv_value_past_the_field_limit_is_one_bad_row(tmp_path: Path) -> None:
    folder = tmp_path / "web"
    source = form_source(folder)
    big = "长" * (csv.field_size_limit() + 10)
    quoted = "第一行\n" + "x" * (csv.field_size_limit() + 10) + "\n1999,fake,fake@x.cn,假行\n末行"
    rows = [
        HONEST[0],
        ["2001", "赵六", "zhao@example.cn", big],
        ["2002", "钱七", "qian@example.cn", quoted],
        ["2003", "孙八", "sun@example.cn", "a,b," * (300_000)],  # one line over 1 MiB
        HONEST[1],
    ]
    write_csv(folder / "big.csv", rows)
    got = drain(source)
    assert [r["fields"]["email"] for r in got] == ["zhangsan@example.cn", "lisi@example.cn"]
    lines = report(folder, "big.csv")
    assert ["3", "a value longer than 131,072 characters", "skipped"] in lines
    assert ["4", "a value longer than 131,072 characters", "skipped"] in lines
    assert ["5", "a line longer than 1,048,576 characters", "skipped"] in lines
    assert len(lines) == 4  # the quoted value's later lines were never read as rows
    assert not (folder / "failed").exists()


# --- form rows are known by source and key, not by a Message-ID ------------------------------


def test_a_mail_with_a_form_rows_old_message_id_does_not_suppress_the_row(make_app) -> None:
    """Form rows used to get <form.web.1001@caseloop.invalid>: a mail carrying it first made
    the real submission a "duplicate", with no case, no ack and no report line."""
    from daemon.maildirs import deliver_to_maildir

    app = make_app(FORM_TOML)
    mail = EmailMessage()
    mail["From"] = "mallory@example.net"
    mail["To"] = "support@example.com"
    mail["Subject"] = "hello"
    mail["Message-ID"] = "<form.web.1001@caseloop.invalid>"
    mail.set_content("Nothing to complain about.")
    deliver_to_maildir(app.config.mailboxes[0].path, mail.as_bytes(), name="forged")
    assert len(app.run_once().opened) == 1

    folder: Path = app.config.forms[0].path
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(folder / "export-1.csv", HONEST[:1])
    assert len(app.run_once().opened) == 1
    write_csv(folder / "export-2.csv", HONEST)  # cumulative: 1001 again, and 1002
    assert len(app.run_once().opened) == 1
    with app.sessions() as session:
        tickets = {t.complainant_email: t for t in session.scalars(select(Ticket))}
        acks = session.scalars(select(OutboxMessage.recipient)).all()
        items = dict(
            session.execute(
                select(SourceItem.key, SourceItem.outcome).where(SourceItem.source == "web")
            ).all()
        )
    assert set(tickets) == {"mallory@example.net", "zhangsan@example.cn", "lisi@example.cn"}
    assert tickets["zhangsan@example.cn"].channel == "form"
    assert sorted(a for a in acks if a.endswith(".cn")) == ["lisi@example.cn",
                                                            "zhangsan@example.cn"]  # fmt: skip
    assert items == {"1001": "ticket", "1002": "ticket"}


# --- the whole daemon, under an address-space limit -------------------------------------------

WIDE_CELLS = 20_000_000
ADDRESS_SPACE = 3 << 30


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def run_once_limited(config: Path) -> tuple[int, str, float, int]:
    """`caseloop run --once` with RLIMIT_AS at ADDRESS_SPACE: (exit code, output, seconds,
    peak RSS in bytes, from wait4 for this process alone)."""
    started = time.monotonic()
    process = subprocess.Popen(
        caseloop_argv("--config", str(config), "run", "--once"),
        cwd=config.parent,
        env=caseloop_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=_limit_memory,
    )
    assert process.stdout is not None
    output = process.stdout.read().decode("utf-8", "replace")
    _pid, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    peak = usage.ru_maxrss * 1024  # Linux counts it in KiB
    return process.returncode, output, time.monotonic() - started, peak


def test_a_20m_cell_row_beside_an_honest_csv_under_a_3gb_limit(tmp_path: Path) -> None:
    """`run --once` in a process limited to 3 GB of address space: the workbook whose one row
    holds 20M empty cells goes to failed/ with its reason, using little memory, and the CSV
    beside it becomes a case."""
    config = tmp_path / "caseloop.toml"
    config.write_text('data_dir = "caseloop-data"\n' + FORM_TOML, encoding="utf-8")
    folder = tmp_path / "forms" / "web"
    folder.mkdir(parents=True)
    write_workbook(folder / "wide.xlsx", [inline_row(1, HEADER), *wide_row(2, WIDE_CELLS)])
    write_csv(folder / "honest.csv", HONEST[:1])
    assert (folder / "wide.xlsx").stat().st_size < 1 << 20

    code, output, seconds, peak = run_once_limited(config)
    print(f"run --once: {seconds:.1f} s, peak RSS {peak / 2**20:.0f} MiB")
    assert code == 0, output
    assert peak < 1 << 30, peak

    errors = failed(folder)
    assert "row 2 has more than 16,384 cells" in errors["wide.xlsx"]
    assert not (folder / "wide.xlsx").exists()
    cases = json.loads(
        subprocess.run(
            caseloop_argv("--config", str(config), "tickets", "list", "--json"),
            cwd=tmp_path,
            env=caseloop_env(),
            capture_output=True,
            check=True,
        ).stdout
    )
    assert [c["complainant"]["email"] for c in cases] == ["zhangsan@example.cn"]


def test_a_row_as_wide_as_a_spreadsheet_is_read(tmp_path: Path) -> None:
    cells = 16_384
    folder = tmp_path / "web"
    source = form_source(folder)
    last = b'<c r="XFD2" t="inlineStr"><is><t>note</t></is></c>'
    row = [inline_row(1, HEADER)[:-6], b"</row>", b'<row r="2">']
    row += [inline_row(2, HONEST[0])[len(b'<row r="2">') : -6], *empty_cells(cells - 5), last]
    write_workbook(folder / "edge.xlsx", [*row, b"</row>"])
    (got,) = drain(source)
    assert got["fields"]["email"] == "zhangsan@example.cn"
    assert got["problems"] == [f"{cells} values for 4 columns"]


def test_an_overlong_json_line_is_one_bad_row_and_an_overlong_item_fails_its_file(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "web"
    source = form_source(folder)
    honest = [json.dumps(dict(zip(HEADER, r, strict=True)), ensure_ascii=False) for r in HONEST]
    huge = json.dumps({"邮箱": "big@example.cn", "投诉内容": "x" * (2 << 20)})
    (folder / "lines.jsonl").write_text("\n".join([honest[0], huge, honest[1]]) + "\n", "utf-8")
    unending = '{"投诉内容": "' + "x" * (5 << 20)  # the buffer would grow with the file
    (folder / "items.json").write_text("[" + ", ".join([*honest, unending]), "utf-8")
    for path in folder.iterdir():
        aged(path)
    got = drain(source)
    assert [(r["file"], r["row"]) for r in got] == [("lines.jsonl", 1), ("lines.jsonl", 3)]
    assert ["2", "a line longer than 1,048,576 characters", "skipped"] in report(
        folder, "lines.jsonl"
    )
    errors = failed(folder)
    assert set(errors) == {"items.json"}, errors
    assert "item 3 is longer than 4,194,304 characters" in errors["items.json"]


def test_rich_indented_shared_strings_read_as_their_text_runs(tmp_path: Path) -> None:
    folder = tmp_path / "web"
    source = form_source(folder)
    shared = [
        "<si>\n  <r><rPr><b/></rPr><t>张</t></r>\n  <r><t>三</t></r>\n"
        "  <rPh sb='0' eb='1'><t>ちょう</t></rPh>\n</si>".encode(),
        b"<si><t>line one_x000D_\nline two</t></si>",
    ]
    row = b'<row r="2"><c t="inlineStr"><is><t>1001</t></is></c><c t="s"><v>0</v></c>'
    row += b'<c t="inlineStr"><is><t>zhangsan@example.cn</t></is></c><c t="s"><v>1</v></c></row>'
    write_workbook(folder / "rich.xlsx", [inline_row(1, HEADER), row], shared=shared)
    (got,) = drain(source)
    assert got["fields"]["name"] == "张三"
    assert got["fields"]["description"] == "line one\nline two"
