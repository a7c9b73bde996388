"""A desk teaches caseloop its own categories: staff correct cases, `classify train` learns from
them, `classify eval` shows the gain on cases it never saw, and intake then uses the model."""

from __future__ import annotations

import json
from email.message import EmailMessage
from pathlib import Path

import numpy as np
import pytest
from conftest import write_config
from sqlalchemy import select

from daemon import config as configmod
from daemon.app import App
from daemon.cli import main
from daemon.store.models import Ticket
from handlers import textmodel

# GENERATED for this test (not real complaints): a desk with two categories of its own, which
# the built-in rules cannot name; staff correct every such case when it comes in.
PLANS = ["5G套餐", "宽带", "流量包", "月租套餐", "家庭宽带", "国际漫游", "副卡", "合约机"]
TELECOM = [
    "{p}被营业厅私自变更，话费单多出一项",
    "办理{p}后信号一直没有，营业厅不处理",
    "my {p} plan was switched without asking and the phone bill doubled",
]
CARDS = ["信用卡", "储蓄卡", "借记卡", "联名卡", "白金卡", "公务卡", "学生卡", "附属卡"]
BANKING = [
    "{p}被银行冻结，柜台说不清原因",
    "the bank closed my {p} account and kept my deposit for weeks",
]
# Cases of the same desk that training never sees.
HELD_OUT = [
    ("营业厅把我的宽带套餐改成了更贵的，也没有通知", "telecom"),
    ("国际漫游开通后没有信号，营业厅也不管", "telecom"),
    ("the shop switched my data plan without asking me", "telecom"),
    ("储蓄卡无故被冻结，银行不给解释", "banking"),
    ("the bank froze my savings account and will not say why", "banking"),
    ("信用卡被银行冻结了，打客服也说不清楚", "banking"),
]


def complaint(i: int, text: str) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"] = f"consumer{i}@example.org", "support@example.com"
    msg["Subject"], msg["Message-ID"] = text[:24], f"<desk-{i}@example.org>"
    msg.set_content(f"{text}。要求尽快处理。\n\nThanks, consumer {i}")
    return msg.as_bytes()


def drop(inbox: Path, mails: list[tuple[int, str]]) -> None:
    for sub in ("new", "cur", "tmp"):
        (inbox / sub).mkdir(parents=True, exist_ok=True)
    for i, text in mails:
        (inbox / "new" / f"{i}.eml").write_bytes(complaint(i, text))


def cases(config_path: Path) -> dict[str, Ticket]:
    app = App(configmod.load(config_path))
    try:
        with app.sessions() as session:
            found = session.scalars(select(Ticket)).all()
            return {t.complainant_email: t for t in found}
    finally:
        app.close()


@pytest.mark.slow
def test_classify_train_learns_staffs_corrections_and_eval_shows_the_gain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, '[classify]\nadd = ["telecom", "banking"]\n')
    run = ["--config", str(config)]
    texts = [(t.format(p=p), "telecom") for p in PLANS for t in TELECOM]
    texts += [(t.format(p=p), "banking") for p in CARDS for t in BANKING]
    drop(tmp_path / "caseloop-data/inbox", [(i, text) for i, (text, _) in enumerate(texts)])
    assert main([*run, "run", "--once"]) == 0
    opened = cases(config)
    assert len(opened) == len(texts)
    assert not {t.category for t in opened.values()} & {"telecom", "banking"}  # rules can't

    # Too few labels yet: a clear refusal, no model.
    assert main([*run, "classify", "train"]) == 2
    assert "labelled cases" in capsys.readouterr().err
    assert not (tmp_path / "caseloop-data" / textmodel.MODEL_FILE).exists()

    for i, (_, label) in enumerate(texts):  # staff correct each case as it comes in
        number = opened[f"consumer{i}@example.org"].number
        assert main([*run, "tickets", "set", number, "--category", label]) == 0
    capsys.readouterr()
    assert main([*run, "classify", "train", "--corrected-only"]) == 0
    said = capsys.readouterr().out
    assert f"trained on {len(texts)} labelled cases ({len(texts)} corrected by staff)" in said

    held_out = tmp_path / "held-out.jsonl"
    held_out.write_text(
        "\n".join(json.dumps({"text": t, "category": c, "urgent": False}) for t, c in HELD_OUT),
        encoding="utf-8",
    )
    assert main([*run, "classify", "eval", str(held_out), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    rules, combined = figures["rules"], figures["rules and model (as intake uses them)"]
    assert rules["accuracy"] == 0.0
    assert combined["accuracy"] >= 5 / 6
    assert combined["false_urgent"] == 0

    # Intake now names the desk's category on a new complaint.
    drop(tmp_path / "caseloop-data/inbox", [(100, "副卡被营业厅私自变更，话费单多出一项")])
    assert main([*run, "run", "--once"]) == 0
    new_case = cases(config)["consumer100@example.org"]
    assert new_case.category == "telecom"
    capsys.readouterr()
    assert main([*run, "tickets", "show", new_case.number]) == 0
    assert "category: telecom  priority: normal (model: category 0." in capsys.readouterr().out


def test_a_model_from_an_older_version_is_refused_and_intake_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "")
    run = ["--config", str(config)]
    model_path = tmp_path / "caseloop-data" / textmodel.MODEL_FILE
    texts = [t.format(p=p) for p in PLANS for t in TELECOM]
    labels = ["price", "other", "privacy"] * len(PLANS)
    model = textmodel.fit(texts, labels, [None] * len(texts), meta={"trained_at": "then"})
    textmodel.save(model, model_path)
    with np.load(model_path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(str(arrays["meta"]))
    arrays["meta"] = np.array(json.dumps({**meta, "version": 0, "caseloop": "0.0.1"}))
    with model_path.open("wb") as out:
        np.savez(out, **arrays)

    held_out = tmp_path / "eval.jsonl"
    held_out.write_text(json.dumps({"text": "快递没到", "category": "logistics"}) + "\n")
    assert main([*run, "classify", "eval", str(held_out)]) == 1
    err = capsys.readouterr().err
    assert "model format 0" in err and "classify train" in err and "Traceback" not in err

    drop(tmp_path / "caseloop-data/inbox", [(1, "快递三天了还没到，物流信息不更新")])
    assert main([*run, "run", "--once"]) == 0
    assert cases(config)["consumer1@example.org"].category == "logistics"  # the rules decided
