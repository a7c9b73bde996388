"""Benchmark: the hostile web-form exports of issue 18, full size, under a 3 GB address space.

    .venv/bin/python bench/forms_hostile.py [--cells 180000000] [--string-mb 1536] [--keep DIR]

Writes, streamed into the ZIP, an XLSX whose row 2 holds --cells empty cells (the file seen was
3.8 MB and grew to 5.9 GB in openpyxl), an XLSX with one --string-mb MB shared string in row 3
between two honest rows, and an honest CSV; then runs `caseloop run --once` with RLIMIT_AS at
3 GB and prints its exit code, time, peak RSS (wait4) and where each file went. Expected: exit 0,
the wide workbook in failed/ with its reason, the long string's row skipped and reported, the
other rows (two from the workbook, one from the CSV) cases.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from servers import caseloop_argv
from test_forms_hostile import (
    ADDRESS_SPACE,
    FORM_TOML,
    HEADER,
    HONEST,
    failed,
    inline_row,
    run_once_limited,
    wide_row,
    write_csv,
    write_workbook,
)


def long_string(megabytes: int) -> Iterator[bytes]:
    yield b"<si><t>"
    for _ in range(megabytes):
        yield b"x" * (1 << 20)
    yield b"</t></si>"
    yield "<si><t>王五</t></si>".encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=180_000_000)
    parser.add_argument("--string-mb", type=int, default=1536)
    parser.add_argument("--keep", help="work in this folder and keep it")
    args = parser.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="caseloop-hostile-"))
    folder = root / "forms" / "web"
    folder.mkdir(parents=True, exist_ok=True)
    config = root / "caseloop.toml"
    config.write_text('data_dir = "caseloop-data"\n' + FORM_TOML, encoding="utf-8")

    started = time.monotonic()
    write_workbook(folder / "wide.xlsx", [inline_row(1, HEADER), *wide_row(2, args.cells)])
    third = b'<row r="3"><c t="inlineStr"><is><t>1003</t></is></c><c t="s"><v>1</v></c>'
    third += b'<c t="inlineStr"><is><t>wangwu@example.cn</t></is></c><c t="s"><v>0</v></c></row>'
    rows = [inline_row(1, HEADER), inline_row(2, HONEST[0]), third, inline_row(4, HONEST[1])]
    write_workbook(folder / "long.xlsx", rows, shared=long_string(args.string_mb))
    write_csv(folder / "honest.csv", [["3001", "周九", "zhou@example.cn", "充电宝鼓包。"]])
    for path in sorted(folder.iterdir()):
        print(f"{path.name}: {path.stat().st_size / 2**20:.1f} MiB")
    print(f"written in {time.monotonic() - started:.1f} s")

    code, output, seconds, peak = run_once_limited(config)
    print(f"run --once: exit {code}, {seconds:.1f} s, peak RSS {peak / 2**20:.0f} MiB "
          f"(RLIMIT_AS {ADDRESS_SPACE >> 30} GiB)")  # fmt: skip
    if code:
        print(output[-3000:])
    for name, error in failed(folder).items():
        print(f"failed/{name}: {error.splitlines()[-1]}")
    for report in sorted((folder / "processed").glob("*.report.csv")):
        print(f"processed/{report.name}: {report.read_text(encoding='utf-8-sig').splitlines()}")
    cases = json.loads(
        subprocess.run(
            caseloop_argv("--config", str(config), "tickets", "list", "--json"),
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout
    )
    print("cases:", sorted(c["complainant"]["email"] for c in cases))
    if not args.keep:
        shutil.rmtree(root)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
