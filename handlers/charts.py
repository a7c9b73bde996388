"""What the report's and the digest's charts draw with: data never read as markup, and
Chinese labels in a CJK font when the host has one (Debian: fonts-noto-cjk or
fonts-wqy-microhei), else a stable `#NNNN` key (the tables beside the charts name them)."""

from __future__ import annotations

import zlib
from functools import lru_cache
from typing import Any

# Families that hold the CJK ideographs, in the order we prefer them
_CJK_FAMILIES = (
    "Noto Sans CJK",
    "Noto Serif CJK",
    "Source Han Sans",
    "WenQuanYi",
    "Droid Sans Fallback",
    "AR PL",
)


@lru_cache(maxsize=1)
def cjk_font() -> str | None:
    """The name of an installed font with CJK glyphs, or None."""
    from matplotlib import font_manager

    names = sorted({f.name for f in font_manager.fontManager.ttflist})
    for family in _CJK_FAMILIES:
        for name in names:
            if name.startswith(family):
                return name
    return None


def chart_style() -> Any:  # matplotlib types its keys as literals
    """matplotlib rc settings for every chart we draw."""
    style: dict[str, Any] = {"text.parse_math": False, "text.usetex": False}  # "$x^{$" is text
    font = cjk_font()
    if font is not None:
        style |= {"font.family": "sans-serif", "font.sans-serif": [font, "DejaVu Sans"]}
    return style


def label(text: str) -> str:
    """A chart label: as written when it can be drawn, else a stable key."""
    if text.isascii() or cjk_font() is not None:
        return text
    return f"#{zlib.crc32(text.encode()) % 10000:04d}"
