"""A text as the keyword rules and the learned model read it: lowercased, traditional Chinese as
simplified, with the scripts it holds."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import NamedTuple

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[a-z]")
# Traditional Chinese (Hong Kong, Taiwan, Big5 mail) is read as simplified: each traditional-only
# character becomes its simplified form (zhconv's table, MediaWiki's), so 手機無法開機 matches
# 无法开机. Characters also written in simplified text (著, 乾 in 乾隆) are left alone, and
# one str.translate costs a few microseconds where a phrase-by-phrase conversion costs tens.
# The table is read from zhconv's data file, not through `import zhconv`: that imports
# pkg_resources, about 50 ms of every start of every caseloop process.
_ZHCONV = importlib.util.find_spec("zhconv")
assert _ZHCONV is not None and _ZHCONV.origin is not None, "zhconv is a dependency"
_DICTS = json.loads((Path(_ZHCONV.origin).parent / "zhcdict.json").read_bytes())
_TRADONLY = frozenset(_DICTS["TRADONLY"])
_TO_SIMPLIFIED = str.maketrans(
    {
        trad: simp
        for trad, simp in _DICTS["zh2Hans"].items()
        if len(trad) == 1 and len(simp) == 1 and trad in _TRADONLY
    }
)
del _DICTS
_TRADITIONAL = frozenset(map(chr, _TO_SIMPLIFIED))  # a set test is cheaper than translating


class Scanned(NamedTuple):
    """A text as the keyword sets read it: lowercased, with the scripts it holds."""

    text: str
    cjk: bool
    latin: bool


def scanned(text: str) -> Scanned:
    # "İ".lower() is "i" plus a combining dot, which is no word character: "İNJURED" would
    # not start a word.
    lowered = text.replace("İ", "I").lower()
    cjk = bool(CJK.search(lowered))
    if cjk and not _TRADITIONAL.isdisjoint(lowered):
        lowered = lowered.translate(_TO_SIMPLIFIED)
    return Scanned(lowered, cjk, bool(_LATIN.search(lowered)))
