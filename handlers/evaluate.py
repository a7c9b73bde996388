"""Figures of a classifier on labelled complaints: accuracy, confusion, safety recall/precision."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Figures:
    """What one way of classifying (rules, model, both) made of labelled texts."""

    name: str
    total: int = 0
    right: int = 0
    other: int = 0  # predicted "other" (the desk's name for it)
    confusion: Counter[tuple[str, str]] = field(default_factory=Counter)  # (label, predicted)
    urgent_found: int = 0  # labelled urgent, predicted urgent
    urgent_missed: int = 0  # labelled urgent, predicted not
    false_urgent: int = 0  # labelled not urgent, predicted urgent
    ordinary: int = 0  # labelled not urgent
    priorities: bool = True  # False: this way has no opinion on urgency (a model without one)

    def add(self, label: str, predicted: str, urgent: bool | None, said: bool | None) -> None:
        self.total += 1
        self.right += label == predicted
        self.confusion[label, predicted] += 1
        if said is None:
            self.priorities = False
        if urgent is None or said is None:
            return
        if urgent:
            self.urgent_found += said
            self.urgent_missed += not said
        else:
            self.ordinary += 1
            self.false_urgent += said

    def count_other(self, other: str) -> None:
        self.other = sum(n for (_, p), n in self.confusion.items() if p == other)

    @property
    def accuracy(self) -> float:
        return self.right / self.total if self.total else 0.0

    @property
    def safety_recall(self) -> float | None:
        labelled = self.urgent_found + self.urgent_missed
        return self.urgent_found / labelled if labelled and self.priorities else None

    @property
    def safety_precision(self) -> float | None:
        said = self.urgent_found + self.false_urgent
        return self.urgent_found / said if said and self.priorities else None

    def summary(self) -> dict[str, object]:
        return {
            "texts": self.total,
            "accuracy": round(self.accuracy, 4),
            "other_share": round(self.other / self.total, 4) if self.total else 0.0,
            "urgent_found": self.urgent_found if self.priorities else None,
            "urgent_labelled": self.urgent_found + self.urgent_missed,
            "false_urgent": self.false_urgent if self.priorities else None,
            "ordinary": self.ordinary,
            "safety_recall": _round(self.safety_recall),
            "safety_precision": _round(self.safety_precision),
            "confusion": [
                [label, predicted, n] for (label, predicted), n in self.confusion.items()
            ],
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def describe(figures: Figures, categories: tuple[str, ...]) -> str:
    """The figures as an operator reads them, with the confusion table (rows: the label)."""
    f = figures
    lines = [
        f"== {f.name}: {f.total} texts",
        f"accuracy {_percent(f.accuracy)}   other {f.other} "
        f"({_percent(f.other / f.total if f.total else 0)})",
    ]
    if f.priorities:
        lines.append(
            f"safety: {f.urgent_found} of {f.urgent_found + f.urgent_missed} urgent found "
            f"(recall {_percent(f.safety_recall)}, precision {_percent(f.safety_precision)}); "
            f"{f.false_urgent} false urgent in {f.ordinary} ordinary"
        )
    else:
        lines.append("safety: this way gives no priority (the model learned none)")
    seen = {c for pair in f.confusion for c in pair}
    names = [c for c in categories if c in seen] + sorted(seen - set(categories))
    short = [n[:7] for n in names]
    width = max((len(n) for n in names), default=5)
    corner = "label / said"
    lines.append(f"{corner:<{width}}  " + " ".join(f"{s:>7}" for s in short))
    for label in names:
        counts = " ".join(f"{f.confusion.get((label, p), 0) or '.':>7}" for p in names)
        lines.append(f"{label:<{width}}  {counts}")
    return "\n".join(lines)
