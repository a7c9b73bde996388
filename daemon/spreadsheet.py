"""Cells of the CSV files we write, safe to open in a spreadsheet (no formula injection)."""


def spreadsheet_safe(value: object) -> str:
    """A CSV cell no spreadsheet runs as a formula: = + - @ (and tab, CR) get a leading '."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
