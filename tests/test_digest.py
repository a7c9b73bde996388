"""The supervisor digest: content, MIME with the inline chart, one per cron slot, never empty."""

from __future__ import annotations

import email
import io
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402
from sqlalchemy import select  # noqa: E402

from daemon.app import App  # noqa: E402
from daemon.store.models import DigestRun, EscalationStep, OutboxMessage, Ticket  # noqa: E402
from handlers import digest  # noqa: E402
from tests.test_sla import ACCEPTANCE_ONLY, at, mails, open_case, sweep  # noqa: E402

SUPERVISORS = """
[escalation]
supervisors = ["lead@example.org", "zhang@example.org"]

[[staff]]
address = "lead@example.org"
language = "en"

[[staff]]
address = "zhang@example.org"
language = "zh-CN"

[[staff]]
address = "ann@example.org"
language = "en"
"""


def parse(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=policy.default)  # type: ignore[return-value]


def digests(app: App) -> list[OutboxMessage]:
    return mails(app, "digest")


def test_digest_mail_has_text_html_and_a_decodable_chart_by_content_id(make_app) -> None:
    app: App = make_app(SUPERVISORS + ACCEPTANCE_ONLY)
    late = open_case(app)
    open_case(app, priority="urgent", assignee=None)
    app.clock.set(at(2026, 11, 30, 9, 30))  # the first case is three days past acceptance
    sweep(app)
    with app.sessions.begin() as session:
        assert digest.send_digest(session, app.services, app.clock.now()) == 2
    sent = {m.recipient: parse(m.raw) for m in digests(app)}
    assert set(sent) == {"lead@example.org", "zhang@example.org"}
    for recipient, msg in sent.items():
        assert msg["Auto-Submitted"] == "auto-generated"
        assert msg["X-Auto-Response-Suppress"] == "All"
        assert msg["Message-ID"] and msg["Date"]
        assert msg["To"] == recipient
        assert msg["From"].addresses[0].addr_spec == app.config.support_address
        assert msg.get_content_type() == "multipart/alternative"
        text = msg.get_body(("plain",))
        assert text is not None
        related = next(p for p in msg.iter_parts() if p.get_content_type() == "multipart/related")
        html = next(p for p in related.iter_parts() if p.get_content_type() == "text/html")
        image = next(p for p in related.iter_parts() if p.get_content_type() == "image/png")
        cid = image["Content-ID"].strip("<>")
        assert image.get_content_disposition() == "inline"
        assert image.get_filename() == "chart.png"
        assert f'src="cid:{cid}"' in html.get_content()
        pixels = plt.imread(io.BytesIO(image.get_content()), format="png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100
        body = text.get_content()
        with app.reads() as session:
            number = session.get(Ticket, late).number  # type: ignore[union-attr]
        assert number in body
        if recipient == "lead@example.org":
            assert "Newly overdue since the last digest (2)" in body
            assert "Urgent cases (1)" in body
            assert "ann@example.org: 1" in body
            assert "2 overdue" in msg["Subject"]
            assert "unassigned: 1" in body
        else:
            assert "上次日报以来新增超期（2）" in body
            assert "紧急投诉（1）" in body
    with app.reads() as session:
        marked = session.scalars(
            select(EscalationStep.in_digest_at).where(EscalationStep.step == "level1")
        ).all()
    assert marked and all(m is not None for m in marked)  # reported: not "new" in the next digest
    with app.reads() as session:
        again = digest.print_digest(session, app.services, app.clock.now())
    assert "上次日报以来新增超期（0）" in again  # default language of the printed digest


def test_one_digest_per_cron_slot_across_restarts(make_app, tmp_path: Path) -> None:
    app: App = make_app(SUPERVISORS)
    open_case(app)  # received: a decision is awaited, so the digest has something to say
    app.clock.set(at(2026, 11, 25, 9, 0, 30))  # Wednesday's 09:00 slot
    with app.sessions.begin() as session:
        assert digest.scheduled(session, app.services, app.clock.now()) == 1
    with app.sessions.begin() as session:
        assert digest.scheduled(session, app.services, app.clock.now()) == 0
    restarted: App = make_app(SUPERVISORS, root=tmp_path)
    restarted.clock.move(timedelta(hours=3))
    with restarted.sessions.begin() as session:
        assert digest.scheduled(session, restarted.services, restarted.clock.now()) == 0
    assert len(digests(app)) == 2
    intents = sorted(m.intent for m in digests(app))
    assert intents[0] == "digest:2026-11-25T01:00:00+00:00:lead@example.org"


def test_nothing_to_say_is_recorded_and_not_sent(make_app) -> None:
    app: App = make_app(SUPERVISORS)
    app.clock.set(at(2026, 11, 25, 9, 5))
    with app.sessions.begin() as session:
        assert digest.scheduled(session, app.services, app.clock.now()) == 1
    assert digests(app) == []
    with app.reads() as session:
        run = session.scalars(select(DigestRun)).one()
    assert run.sent == 0 and run.slot == at(2026, 11, 25, 9, 0)


def test_empty_digest_is_sent_when_configured(make_app) -> None:
    app: App = make_app(
        SUPERVISORS.replace("[escalation]", "[escalation]\ndigest_when_empty = true")
    )
    app.clock.set(at(2026, 11, 25, 9, 5))
    with app.sessions.begin() as session:
        assert digest.scheduled(session, app.services, app.clock.now()) == 1
    assert len(digests(app)) == 2


def test_moved_clock_gives_exactly_the_expected_mails_once_each(make_app) -> None:
    """A week of the daemon's clock jobs: reminder, daily urging and one digest per workday."""
    app: App = make_app(SUPERVISORS + ACCEPTANCE_ONLY)
    app.clock.set(at(2026, 11, 24, 10, 0))
    open_case(app)  # acceptance due Fri 27 Nov 10:00
    while app.clock.now() < at(2026, 12, 1, 12, 0):
        app.run_once()
        app.clock.move(timedelta(hours=1))
    app.run_once()
    reminders = [(m.recipient, m.created_at) for m in mails(app, "reminder")]
    assert reminders == [
        ("ann@example.org", at(2026, 11, 27, 9, 0)),
        ("ann@example.org", at(2026, 11, 30, 9, 0)),
        ("ann@example.org", at(2026, 12, 1, 9, 0)),
    ]
    assert mails(app, "escalation") == []
    sent = digests(app)
    days = sorted({m.created_at for m in sent})
    # Tuesday's 09:00 slot when the daemon starts at 10:00, then every working day at 09:00.
    assert days == [
        at(2026, 11, 24, 10, 0),
        at(2026, 11, 25, 9, 0),
        at(2026, 11, 26, 9, 0),
        at(2026, 11, 27, 9, 0),
        at(2026, 11, 30, 9, 0),
        at(2026, 12, 1, 9, 0),
    ]
    assert len(sent) == 2 * len(days)  # each supervisor once per slot
    monday = next(
        m for m in sent if m.created_at == at(2026, 11, 30, 9, 0) and m.recipient.startswith("l")
    )
    assert "1 new" in monday.subject  # the breach on Friday 10:00 is news on Monday
    tuesday = next(
        m for m in sent if m.created_at == at(2026, 12, 1, 9, 0) and m.recipient.startswith("l")
    )
    assert "0 new" in tuesday.subject and "1 overdue" in tuesday.subject
    outbox = sorted(p.name for p in (app.config.outbox_dir / "new").iterdir())
    assert len(outbox) == len(mails(app))  # the Maildir outbox wrote each mail once


def test_digests_follow_the_working_day_calendar(make_app) -> None:
    """The default cron fires daily; National Day (a holiday) is skipped and the make-up
    working Saturday 2026-10-10 gets its digest."""
    app: App = make_app(
        SUPERVISORS.replace("[escalation]", "[escalation]\ndigest_when_empty = true")
    )
    sent = {}
    for day in (1, 9, 10, 11):
        app.clock.set(at(2026, 10, day, 9, 5))
        with app.sessions.begin() as session:
            digest.scheduled(session, app.services, app.clock.now())
        sent[day] = len(digests(app))
    assert sent == {1: 0, 9: 2, 10: 4, 11: 4}  # Oct 11 is a Sunday off
