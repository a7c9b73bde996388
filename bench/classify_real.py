"""Classification on REAL public complaints (tests/data/real/, sources in its SOURCES.md).

    .venv/bin/python bench/classify_real.py [--json]

Prints, for the development part (rules were tuned on it) and the held-out part (never tuned
on): the rules' accuracy, "other" share and safety figures, by language; then the desk
experiment: a model trained on the development part's labels (as `classify train` trains on a
desk's labelled cases) evaluated on the held-out part, rules vs model vs both as intake uses
them; and the issue-17 checks on the held-out part (safety reports found, false urgent per 100
ordinary, credit-report misuse filed as privacy, share filed as other).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.classifycmd import Labelled, evaluate  # noqa: E402
from daemon.config import Config, build  # noqa: E402
from handlers import textmodel  # noqa: E402
from handlers.evaluate import describe  # noqa: E402

DATA = ROOT / "tests" / "data" / "real"
CREDIT_MISUSE = ("Improper use of your report", "identity theft", "belongs to someone else")


def read(name: str) -> list[dict[str, object]]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def labelled(rows: list[dict[str, object]]) -> list[Labelled]:
    return [
        Labelled(str(r["id"]), str(r["text"]), str(r["category"]), None, bool(r["urgent"]))
        for r in rows
    ]


def checks(rows: list[dict[str, object]], config: Config) -> dict[str, object]:
    from handlers.classify import classify

    desk = config.classify
    said = {str(r["id"]): classify(str(r["text"]), (), desk=desk) for r in rows}
    safety = [r for r in rows if r["urgent"]]
    ordinary = [r for r in rows if not r["urgent"]]
    credit = [r for r in rows if any(k in str(r.get("label_from", "")) for k in CREDIT_MISUSE)]
    urgent = sum(said[str(r["id"])][1] == "urgent" for r in safety)
    false_urgent = sum(said[str(r["id"])][1] == "urgent" for r in ordinary)
    privacy = sum(said[str(r["id"])][0] == "privacy" for r in credit)
    # The measure: reports whose text states harm (an independent reader's
    # `states_harm`), and ordinary ones (neither flagged by the dataset nor stating harm).
    stated = [r for r in rows if r.get("states_harm")]
    plain = [r for r in rows if not r["urgent"] and r.get("states_harm") is False]
    stated_found = sum(said[str(r["id"])][1] == "urgent" for r in stated)
    plain_false = sum(said[str(r["id"])][1] == "urgent" for r in plain)
    return {
        "stated_harm_urgent": f"{stated_found} of {len(stated)}",
        "false_urgent_in_plain": f"{plain_false} of {len(plain)}",
        "safety_urgent": f"{urgent} of {len(safety)}",
        "false_urgent_per_100_ordinary": round(100 * false_urgent / len(ordinary), 1),
        "credit_misuse_privacy": f"{privacy} of {len(credit)}",
        "other_share": round(sum(c == "other" for c, _ in said.values()) / len(rows), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    config = build({}, file="<bench>", base=ROOT)
    dev, held = read("dev.jsonl"), read("heldout.jsonl")
    result: dict[str, object] = {}
    for name, rows in (("dev", dev), ("heldout", held)):
        for lang in ("all", "en", "zh"):
            part = [r for r in rows if lang == "all" or r["lang"] == lang]
            rules = evaluate(labelled(part), config, None)[0]
            result[f"{name}/{lang}"] = rules.summary() | {"confusion": None}
            if not args.json and lang == "all":
                print(f"-- {name} ({len(part)} real complaints)")
                print(describe(rules, config.categories), end="\n\n")
    started = time.perf_counter()
    model = textmodel.fit(
        [str(r["text"]) for r in dev],
        [str(r["category"]) for r in dev],
        ["urgent" if r["urgent"] else "normal" for r in dev],
        meta={"trained_at": "bench"},
    )
    fit_seconds = time.perf_counter() - started
    ways = evaluate(labelled(held), config, model)
    result["desk_experiment"] = {w.name: w.summary() | {"confusion": None} for w in ways}
    result["fit_seconds"] = round(fit_seconds, 2)
    result["heldout_checks"] = checks(held, config)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return 0
    print(f"-- desk experiment: trained on dev ({len(dev)} labels, {fit_seconds:.1f} s), held out")
    for way in ways:
        s = way.summary()
        print(
            f"{way.name}: accuracy {100 * float(s['accuracy']):.1f}%, other "
            f"{100 * float(s['other_share']):.1f}%, urgent found {s['urgent_found']} of "
            f"{s['urgent_labelled']}, false urgent {s['false_urgent']} in {s['ordinary']}"
        )
    print("\n-- held-out checks (rules):", json.dumps(result["heldout_checks"], ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
