"""Chart text: never markup, Chinese drawn in a CJK font when the host has one, local time."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from handlers import charts, digest


def test_chinese_labels_are_drawn_when_a_cjk_font_is_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(charts, "cjk_font", lambda: "WenQuanYi Micro Hei")
    assert charts.label("鑫达家电官方旗舰店") == "鑫达家电官方旗舰店"
    assert charts.chart_style()["font.sans-serif"][0] == "WenQuanYi Micro Hei"
    assert charts.chart_style()["text.parse_math"] is False
    monkeypatch.setattr(charts, "cjk_font", lambda: None)
    key = charts.label("鑫达家电官方旗舰店")
    assert key.startswith("#") and key == charts.label("鑫达家电官方旗舰店")  # a stable key
    assert charts.label("$x^{$") == "$x^{$"


def test_the_digest_chart_is_titled_in_local_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.axes

    titles: list[str] = []
    original = matplotlib.axes.Axes.set_title

    def keep(self, label, *args, **kwargs):  # type: ignore[no-untyped-def]
        titles.append(label)
        return original(self, label, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", keep)
    data = digest.DigestData(now=datetime(2026, 12, 4, 1, 0, tzinfo=UTC), since=None)
    png = digest.chart_png(data, ZoneInfo("Asia/Shanghai"))
    assert png.startswith(b"\x89PNG")
    assert titles == ["Open cases by age, 2026-12-04 09:00 CST"]
