"""`caseloop classify train` and `classify eval`: the desk's model from staff's labels, and figures.

A label is what staff said a case is: a category or priority set with `tickets set` or
`#category`/`#priority` (an override in the timeline), and, unless --corrected-only, the
category and priority of a case staff saw through to resolved or closed without changing them.
The text is what classification read: the subject and the first message's words.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from daemon import __version__
from daemon.config import Config
from daemon.store.models import Ticket, TimelineEntry
from handlers.classify import classify
from handlers.evaluate import Figures, describe

if TYPE_CHECKING:  # numpy and scikit-learn load only when a model is trained or read
    from handlers import textmodel

MIN_LABELS = 20
HELD_OUT_SHARE = 5  # one case in five (by its number's hash) is held out to evaluate


class ClassifyUsageError(Exception):
    """A problem with what was asked (a file, too few labels): exit 2 with the message."""


@dataclass(frozen=True)
class Labelled:
    key: str  # the case number, or file:line
    text: str
    category: str
    priority: str | None  # None: no label for it
    urgent: bool | None = None


def labelled_cases(session: Session, *, corrected_only: bool) -> tuple[list[Labelled], int]:
    """Staff's labels, and how many of them are corrections."""
    corrected: dict[int, set[str]] = {}
    notes = select(TimelineEntry.ticket_id, TimelineEntry.data).where(TimelineEntry.kind == "note")
    for ticket_id, data in session.execute(notes):
        if isinstance(data, dict) and data.get("override"):
            fields = {str(c).split(":")[0] for c in data.get("changes", [])}
            corrected.setdefault(ticket_id, set()).update(fields)
    first_in = (
        select(TimelineEntry.ticket_id, TimelineEntry.subject, TimelineEntry.text)
        .where(TimelineEntry.kind == "message_in", TimelineEntry.direction == "in")
        .order_by(TimelineEntry.ticket_id, TimelineEntry.id)
    )
    texts: dict[int, str] = {}
    for ticket_id, subject, text in session.execute(first_in):
        texts.setdefault(ticket_id, f"{subject or ''}\n{text or ''}")
    found: list[Labelled] = []
    tickets = select(Ticket).where(Ticket.erased_at.is_(None)).order_by(Ticket.id)
    for ticket in session.scalars(tickets):
        fields = corrected.get(ticket.id, set())
        seen_through = ticket.status in ("resolved", "closed") and not corrected_only
        if ticket.id not in texts or not (fields or seen_through):
            continue
        if "category" not in fields and not seen_through:
            continue  # only the priority was corrected: its category is still the rules' guess
        priority = ticket.priority if ("priority" in fields or seen_through) else None
        found.append(Labelled(ticket.number, texts[ticket.id], ticket.category, priority))
    return found, sum(1 for f in corrected.values() if "category" in f)


def held_out(key: str) -> bool:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % HELD_OUT_SHARE == 0


def evaluate(
    rows: list[Labelled], config: Config, model: textmodel.TextModel | None
) -> list[Figures]:
    """Figures for the rules, the model alone and both as intake uses them."""
    ways = [Figures("rules")]
    if model is not None:
        ways += [Figures("model"), Figures("rules and model (as intake uses them)")]
    for row in rows:
        urgent = row.urgent if row.urgent is not None else _urgent(row.priority)
        category, priority = classify(row.text, config.rules, desk=config.classify)
        ways[0].add(row.category, category, urgent, priority == "urgent")
        if model is not None:
            guess, priority_guess = model.guess(row.text)
            said = None if priority_guess is None else priority_guess.value == "urgent"
            ways[1].add(row.category, guess.value, urgent, said)
            category, priority = classify(row.text, config.rules, desk=config.classify, model=model)
            ways[2].add(row.category, category, urgent, priority == "urgent")
    for way in ways:
        way.count_other(config.classify.desk_name("other"))
    return ways


def _urgent(priority: str | None) -> bool | None:
    return None if priority is None else priority == "urgent"


def read_eval_file(path: Path) -> list[Labelled]:
    """One {"text", "category", "urgent"} a line; blank lines and {"comment"...} lines skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ClassifyUsageError(f"{path}: cannot read it ({exc})") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ClassifyUsageError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(item, dict) or "text" not in item:
            if isinstance(item, dict) and len(item) == 1:  # a one-key note ({"generated": ...})
                continue
            raise ClassifyUsageError(f'{path}:{number}: expected {{"text", "category", "urgent"}}')
        text, category, urgent = item.get("text"), item.get("category"), item.get("urgent")
        if not isinstance(text, str) or not isinstance(category, str):
            raise ClassifyUsageError(f"{path}:{number}: text and category must be strings")
        if urgent is not None and not isinstance(urgent, bool):
            raise ClassifyUsageError(f"{path}:{number}: urgent must be true or false")
        rows.append(Labelled(f"{path.name}:{number}", text, category, None, urgent))
    if not rows:
        raise ClassifyUsageError(f"{path}: no labelled texts in it")
    return rows


def train(config: Config, session: Session, *, corrected_only: bool, now: str) -> dict[str, Any]:
    """Fit, evaluate on the held-out fifth, refit on all and write the model; its description."""
    rows, corrections = labelled_cases(session, corrected_only=corrected_only)
    if len(rows) < MIN_LABELS:
        raise ClassifyUsageError(
            f"only {len(rows)} labelled cases (staff's corrections"
            + ("" if corrected_only else " and cases seen through to resolved or closed")
            + f"); a model needs at least {MIN_LABELS}"
        )
    train_rows = [r for r in rows if not held_out(r.key)]
    test_rows = [r for r in rows if held_out(r.key)]
    meta: dict[str, Any] = {"trained_at": now, "caseloop": __version__}
    evaluation: dict[str, Any] = {}
    if len({r.category for r in train_rows}) >= 2 and test_rows:
        trial = _fit(train_rows, meta)
        for way in evaluate(test_rows, config, trial):
            evaluation[way.name] = way.summary()
    meta.update(
        labels=len(rows),
        corrections=corrections,
        held_out=len(test_rows),
        categories=sorted({r.category for r in rows}),
        evaluation=evaluation,
    )
    model = _fit(rows, meta)
    from handlers import textmodel

    path = config.data_dir / textmodel.MODEL_FILE
    textmodel.save(model, path)
    return {**meta, "path": str(path), "priorities": model.priority is not None}


def _fit(rows: list[Labelled], meta: dict[str, Any]) -> textmodel.TextModel:
    from handlers import textmodel

    try:
        return textmodel.fit(
            [r.text for r in rows],
            [r.category for r in rows],
            [r.priority for r in rows],
            meta=meta,
        )
    except textmodel.ModelError as exc:
        raise ClassifyUsageError(str(exc)) from None


def print_training(result: dict[str, Any]) -> None:
    print(
        f"trained on {result['labels']} labelled cases ({result['corrections']} corrected by "
        f"staff), {len(result['categories'])} categories"
        + ("" if result["priorities"] else "; too few priority labels to learn priorities")
    )
    for name, figures in result["evaluation"].items():
        recall = figures["safety_recall"]
        print(
            f"  held out {figures['texts']}: {name}: accuracy {100 * figures['accuracy']:.1f}%"
            + ("" if recall is None else f", safety recall {100 * recall:.1f}%")
        )
    if not result["evaluation"]:
        print("  (too few labels to hold a fifth out: no evaluation)")
    print(f"model written: {result['path']}")


def print_evaluation(ways: list[Figures], config: Config, as_json: bool) -> None:
    if as_json:
        print(json.dumps({w.name: w.summary() for w in ways}, ensure_ascii=False, indent=2))
        return
    print("\n\n".join(describe(w, config.categories) for w in ways))


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    func: Callable[[argparse.Namespace], int],
) -> None:
    commands = sub.add_parser(
        "classify", help="the desk's learned classification: train it, evaluate it"
    ).add_subparsers(dest="classify_cmd", required=True, metavar="{train,eval}")
    p = commands.add_parser(
        "train", help="fit a model on staff's labels and write it to the data folder"
    )
    p.add_argument(
        "--corrected-only",
        action="store_true",
        help="learn only from cases staff corrected (not from cases they saw through)",
    )
    p.set_defaults(func=func, classify_cmd="train")
    p = commands.add_parser(
        "eval", help="accuracy, confusion and safety figures on a labelled JSONL file"
    )
    p.add_argument("file", type=Path, help='one {"text", "category", "urgent"} a line')
    p.add_argument("--model", type=Path, help="a model file (default: the data folder's)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=func, classify_cmd="eval")
