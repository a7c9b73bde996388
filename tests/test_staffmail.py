"""Staff acting by mail: commands with proof, text relayed from our address, forgeries ignored."""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from sqlalchemy import select

from daemon.app import App
from daemon.maildirs import deliver_to_maildir
from daemon.store.models import OutboxMessage, Ticket, TimelineEntry
from handlers.staffmail import check_commands, dkim_proof, parse_commands

STAFF = """
[tickets]  # the default registration essentials, written out: these tests rely on them
mail_essentials = ["name", "respondent", "purchase", "description"]

[escalation]
supervisors = ["lead@example.com"]
urgent_notify = ["compliance@example.com"]
trusted_authserv_ids = ["mx.example.com"]

[[staff]]
address = "agent@example.com"
name = "Agent Wang"
groups = ["quality"]
language = "en"

[[staff]]
address = "agent2@example.com"
groups = ["quality"]

[[routing]]
category = "product_quality"
group = "quality"
"""

COMPLAINT = (
    "您好，我在京东自营旗舰店购买的电水壶（订单号 JD20261101123）用了三天就漏水，"
    "底座坏了。要求退货退款。\n李雷 13800138000"
)


def mail(
    sender: str,
    to: str,
    body: str,
    *,
    subject: str = "电水壶漏水",
    in_reply_to: str | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    msg = EmailMessage()
    for name, value in (headers or {}).items():
        msg[name] = value
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2].rstrip(">"))
    msg["Date"] = "Tue, 24 Nov 2026 10:00:00 +0800"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg.set_content(body)
    return msg.as_bytes()


def drop(app: App, raw: bytes) -> None:
    inbox = app.config.mailboxes[0].path
    assert inbox is not None
    deliver_to_maildir(inbox, raw)


def outbox(app: App) -> list[tuple[OutboxMessage, email.message.EmailMessage]]:
    with app.sessions() as session:
        rows = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
        session.expunge_all()
    return [(r, email.message_from_bytes(r.raw, policy=policy.default)) for r in rows]  # type: ignore[misc]


def body(msg: email.message.EmailMessage) -> str:
    part = msg.get_body(("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def open_case(app: App) -> tuple[Ticket, email.message.EmailMessage]:
    """A consumer complaint, routed to an agent; returns the case and the agent's mail."""
    drop(app, mail("李雷 <li.lei@example.net>", "support@example.com", COMPLAINT))
    app.run_once()
    with app.sessions() as session:
        ticket = session.scalars(select(Ticket)).one()
        session.expunge(ticket)
    (assigned,) = [m for r, m in outbox(app) if r.kind == "assigned"]
    return ticket, assigned


def staff_reply(assigned: email.message.EmailMessage, body_text: str, **kw: str) -> bytes:
    return mail(
        kw.get("sender", "agent@example.com"),
        kw.get("to", str(assigned["Reply-To"])),
        body_text,
        subject="Re: " + str(assigned["Subject"]),
        in_reply_to=str(assigned["Message-ID"]),
    )


def test_new_case_is_routed_to_the_least_loaded_agent_with_how_to_act(make_app) -> None:
    app: App = make_app(STAFF)
    ticket, assigned = open_case(app)
    assert ticket.assignee == "agent@example.com"  # both idle: the config's order decides
    assert assigned["To"] == "agent@example.com"
    assert str(assigned["Reply-To"]).startswith(f"support+{ticket.number}.s")
    text = body(assigned)
    assert "#accept" in text and "JD20261101123" in text  # the summary and the commands
    drop(app, mail("韩梅 <han.mei@example.net>", "support@example.com", COMPLAINT))
    app.run_once()
    with app.sessions() as session:
        assignees = session.scalars(select(Ticket.assignee).order_by(Ticket.id)).all()
    assert assignees == ["agent@example.com", "agent2@example.com"]


def test_staff_accepts_replies_and_resolves_by_mail(make_app) -> None:
    app: App = make_app(STAFF)
    ticket, assigned = open_case(app)
    drop(app, staff_reply(assigned, "#accept\n\nWe will collect the kettle on Thursday."))
    app.run_once()
    drop(app, staff_reply(assigned, "Could you send a photo of the base?\n\n-- \nAgent Wang"))
    app.run_once()
    drop(app, staff_reply(assigned, "#status resolved\nRefund of 299.00 yuan made on 26 Nov."))
    app.run_once()

    with app.sessions() as session:
        case = session.get(Ticket, ticket.id)
        assert case is not None
        assert case.status == "resolved" and case.first_response_at is not None
    to_consumer = [(r, m) for r, m in outbox(app) if r.recipient == "li.lei@example.net"]
    assert [r.kind for r, _ in to_consumer] == ["ack", "accepted", "reply", "resolved"]
    for row, msg in to_consumer:
        assert msg["From"].addresses[0].addr_spec == "support@example.com"
        assert "agent@example.com" not in row.raw.decode("ascii")  # never exposed
        assert str(msg["Subject"]).startswith(f"[{ticket.number}]")
    ack_id = to_consumer[0][1]["Message-ID"]
    for _, msg in to_consumer[1:]:
        assert ack_id in str(msg["References"])  # one conversation for the consumer
    texts = [body(m) for _, m in to_consumer]
    assert "collect the kettle on Thursday" in texts[1]  # goes with the acceptance notice
    assert "photo of the base" in texts[2] and "Agent Wang" not in texts[2]
    assert "Refund of 299.00 yuan" in texts[3]
    assert "#status" not in "".join(texts)


def assert_unproven(app: App, ticket: Ticket) -> None:
    """The usual treatment of unproven staff mail: on the case for staff, the case unchanged."""
    with app.sessions() as session:
        case = session.get(Ticket, ticket.id)
        assert case is not None and case.status == "received"
        last = session.scalars(
            select(TimelineEntry)
            .where(TimelineEntry.kind == "message_in")
            .order_by(TimelineEntry.id.desc())
        ).first()
        assert last is not None and last.internal and last.data.get("unproven")


def test_forged_staff_from_without_proof_changes_nothing(make_app) -> None:
    app: App = make_app(STAFF)
    ticket, assigned = open_case(app)
    before = len(outbox(app))
    # From the agent's address, threaded by Message-ID, but sent to the plain support
    # address (no staff token) and without Authentication-Results from our MX.
    forged = staff_reply(assigned, "#status resolved\nAll done.", to="support@example.com")
    drop(app, forged)
    app.run_once()
    with app.sessions() as session:
        case = session.get(Ticket, ticket.id)
        assert case is not None and case.status == "received"
        last = session.scalars(
            select(TimelineEntry)
            .where(TimelineEntry.kind == "message_in")
            .order_by(TimelineEntry.id.desc())
            .limit(1)
        ).one()
        assert last.internal and last.data.get("unproven")
    assert_only_told_why(app, before)


def assert_only_told_why(app: App, before: int) -> None:
    """Nothing relayed to the consumer; the configured staff address is told, once, why."""
    (error,) = [(r.kind, r.recipient) for r, _ in outbox(app)[before:]]
    assert error == ("staff_error", "agent@example.com")
    (_, mail_) = outbox(app)[-1]
    assert "Reply-To" in body(mail_) or "回复地址" in body(mail_)


def test_a_trusted_dkim_pass_proves_the_staff_member(make_app) -> None:
    app: App = make_app(STAFF)
    ticket, assigned = open_case(app)
    raw = mail(
        "agent@example.com",
        "support@example.com",
        "#accept",
        subject=f"Re: [{ticket.number}]",
        headers={
            "Authentication-Results": "mx.example.com; dkim=pass header.d=example.com; spf=pass"
        },
    )
    drop(app, raw)
    app.run_once()
    with app.sessions() as session:
        case = session.get(Ticket, ticket.id)
        assert case is not None and case.status == "accepted"


FORGED_RESULTS = [
    # the "pass" is inside a quoted local part of smtp.mailfrom
    'mx.example.com; spf=pass smtp.mailfrom="x;dkim=pass header.d=example.com x"@attacker.test;'
    " dkim=none",
    # the "pass" is inside a comment
    "mx.example.com; spf=pass smtp.mailfrom=x@attacker.test"
    " (helo=evil;dmarc=pass header.from=example.com ); dkim=none",
    # a header the parser cannot read (comments nested past any sense) proves nothing
    "mx.example.com; dkim=pass " + "(" * 3000 + " header.d=example.com",
]


@pytest.mark.parametrize("forged", FORGED_RESULTS)
def test_a_pass_hidden_in_a_comment_or_quoted_string_proves_nobody(make_app, forged: str) -> None:
    """A forged `From: agent@` with `#accept`, whose only "pass" our MX's header holds inside a
    quoted string or a comment (or in a header the parser cannot read), is unproven staff mail:
    recorded for staff, nothing applied, nothing relayed."""
    app: App = make_app(STAFF)
    ticket, _ = open_case(app)
    before = len(outbox(app))
    subject, headers = f"Re: [{ticket.number}]", {"Authentication-Results": forged}
    raw = mail(
        "agent@example.com", "support@example.com", "#accept", subject=subject, headers=headers
    )
    drop(app, raw)
    app.run_once()
    assert_unproven(app, ticket)
    assert_only_told_why(app, before)


def test_a_staff_address_in_reply_to_is_not_vouched_for_by_dkim(make_app) -> None:
    """A mail with no From is answered at its Reply-To, but DKIM and DMARC vouch for the From
    domain only: `Reply-To: agent@` beside our MX's pass for example.com proves nobody."""
    app: App = make_app(STAFF)
    ticket, _ = open_case(app)

    def accept() -> bytes:
        passed = {"Authentication-Results": "mx.example.com; dkim=pass header.d=example.com"}
        subject = f"Re: [{ticket.number}]"
        return mail("agent@example.com", "support@example.com", "#accept", subject=subject,
                    headers=passed)  # fmt: skip

    forged = accept().replace(b"From: agent@example.com", b"Reply-To: agent@example.com")
    assert b"\nFrom:" not in forged
    drop(app, forged)
    app.run_once()
    assert_unproven(app, ticket)
    drop(app, accept())  # the same mail with its From: proven, applied
    app.run_once()
    with app.sessions() as session:
        case = session.get(Ticket, ticket.id)
        assert case is not None and case.status == "accepted"


def test_unknown_command_gets_an_error_reply_and_nothing_is_applied(make_app) -> None:
    app: App = make_app(STAFF)
    ticket, assigned = open_case(app)
    drop(app, staff_reply(assigned, "#accept\n#frobnicate now\n\nHello"))
    app.run_once()
    with app.sessions() as session:
        case = session.get(Ticket, ticket.id)
        assert case is not None and case.status == "received"
    rows = outbox(app)
    (error,) = [(r, m) for r, m in rows if r.kind == "staff_error"]
    assert error[0].recipient == "agent@example.com"
    assert "#frobnicate now: unknown command" in body(error[1])
    assert not [r for r, _ in rows if r.kind in ("reply", "accepted")]


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ("#\u0430ccept", "U+0430 CYRILLIC SMALL LETTER A"),
        ("#\u03b1ccept", "U+03B1 GREEK SMALL LETTER ALPHA"),
        ("#ac\u200bcept", "U+200B ZERO WIDTH SPACE"),
        ("#acc\u200dept", "U+200D ZERO WIDTH JOINER"),
        ("\ufeff#accept", "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
        ("\u202e#accept", "U+202E RIGHT-TO-LEFT OVERRIDE"),
        ("\u202etpecca#", "U+202E RIGHT-TO-LEFT OVERRIDE"),  # shown as "#accept"
        ("#\u2066accept\u2069", "U+2066 LEFT-TO-RIGHT ISOLATE"),
    ],
)
def test_a_look_alike_command_is_answered_as_an_error_and_never_relayed(
    make_app, line: str, named: str
) -> None:
    app: App = make_app(STAFF)
    ticket, assigned = open_case(app)
    drop(app, staff_reply(assigned, f"{line}\n\nWe will collect the kettle on Thursday."))
    app.run_once()
    with app.sessions() as session:
        case = session.get(Ticket, ticket.id)
        assert case is not None and case.status == "received"
    rows = outbox(app)
    assert [r.kind for r, _ in rows if r.recipient == "li.lei@example.net"] == ["ack"]
    (error,) = [
        m for r, m in rows if r.kind == "staff_error" and r.recipient == "agent@example.com"
    ]
    text = body(error)
    assert "look-alike or invisible characters" in text and named in text
    assert "type #accept again" in text


def test_reassign_priority_category_and_note_by_mail(make_app) -> None:
    app: App = make_app(STAFF)
    ticket, assigned = open_case(app)
    commands = "#priority urgent\n#category food_safety\n#assign agent2@example.com\n#note 已联系"
    drop(app, staff_reply(assigned, commands))
    app.run_once()
    with app.sessions() as session:
        case = session.get(Ticket, ticket.id)
        assert case is not None
        assert (case.priority, case.category) == ("urgent", "food_safety")
        assert case.assignee == "agent2@example.com"
        notes = [e.text or "" for e in case.timeline if e.kind == "note"]
        assert any("override" in n for n in notes) and "已联系" in notes
    kinds = {(r.kind, r.recipient) for r, _ in outbox(app)}
    assert ("assigned", "agent2@example.com") in kinds
    assert ("unassigned", "agent@example.com") in kinds
    assert ("urgent", "compliance@example.com") in kinds  # raised to urgent: alert at once
    assert ("urgent", "lead@example.com") in kinds


def test_a_stranger_writing_to_a_staff_token_is_a_third_party(make_app) -> None:
    app: App = make_app(STAFF)
    ticket, assigned = open_case(app)
    drop(app, staff_reply(assigned, "#status resolved", sender="mallory@example.org"))
    app.run_once()
    with app.sessions() as session:
        case = session.get(Ticket, ticket.id)
        assert case is not None and case.status == "received"
        assert session.scalar(select(Ticket.id).where(Ticket.id != ticket.id)) is None


def test_a_look_alike_keyword_or_sign_is_named_but_free_text_is_kept() -> None:
    lines = "#status r\u0435solved\n\u266fnote hi\n#note \u0418\u0432\u0430\u043d \u041f.\n#接受"
    commands, _ = parse_commands(lines)
    assert [(c.name, c.lookalike) for c in commands] == [
        ("status", "U+0435 CYRILLIC SMALL LETTER IE"),
        ("note", "U+266F MUSIC SHARP SIGN"),
        ("note", ""),  # a note may be in any script
        ("接受", ""),  # a word in another script is an unknown command, not a look-alike
    ]
    commands, _ = parse_commands("\u202e#accept \udcff")  # a lone surrogate and bidi controls
    assert [(c.name, bool(c.lookalike)) for c in commands] == [("accept", True)]


def test_command_parsing_stops_at_the_first_text_line() -> None:
    commands, rest = parse_commands("\n＃accept\n#note called him\n\nDear customer,\n#not a cmd")
    assert [(c.name, c.argument) for c in commands] == [("accept", ""), ("note", "called him")]
    assert rest == "Dear customer,\n#not a cmd"


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ("#status closed", "cannot go from received to closed"),
        ("#reject", "needs an argument"),
        ("#priority asap", "priorities are"),
        ("#assign boss@example.org", "not a staff address"),
        ("#accept\n#accept", "is already accepted"),
        ("#status rejected", "a rejection needs a reason"),
    ],
)
def test_bad_commands_are_named(make_app, lines: str, problem: str) -> None:
    app: App = make_app(STAFF)
    ticket = Ticket(number="TS-20261124-0001", status="received")
    commands, _ = parse_commands(lines)
    problems = check_commands(app.config, ticket, commands)
    assert len(problems) == 1 and problem in problems[0]


@pytest.mark.parametrize(
    ("header", "proved"),
    [
        ("mx.example.com; dkim=pass header.d=example.com", True),
        ("mx.example.com; dkim=pass header.i=@example.com", True),
        ("mx.example.com; dmarc=pass header.from=example.com", True),
        ("mx.example.com; dkim=fail header.d=example.com", False),
        ("mx.example.com; dkim=pass header.d=evil.example.org", False),
        ("mx.evil.org; dkim=pass header.d=example.com", False),
        ("mx.example.com; dkim=pass (2048-bit key; sel) header.d=example.com", True),
        ('mx.example.com; dkim=pass header.i="agent@example.com"', True),
        ("MX.example.com 1; dmarc=pass (p=none dis=none) header.from=EXAMPLE.com", True),
        ("mx.example.com; dkim=fail (bad sig) header.d=example.com", False),
        *((forged, False) for forged in FORGED_RESULTS),
        (
            "mx.example.com; dkim=pass header.d=example.com; dmarc=pass header.from=exämple.com",
            False,
        ),
        ("mx.example.com; dkim=pass header.d=example.com; " + "spf=none; " * 3000, False),
    ],
)
def test_dkim_proof_needs_a_trusted_pass_for_the_senders_domain(header: str, proved: bool) -> None:
    raw = f"Authentication-Results: {header}\r\nFrom: agent@example.com\r\n\r\nhi\r\n".encode()
    found = dkim_proof(raw, "agent@example.com", ("mx.example.com",))
    assert (found is not None) == proved


def test_missing_details_are_asked_for_once_and_the_reply_fills_them_in(make_app) -> None:
    app: App = make_app(STAFF)
    drop(app, mail("zhao@example.net", "support@example.com", "电水壶用了三天就漏水了，很失望。"))
    app.run_once()
    with app.sessions() as session:
        ticket = session.scalars(select(Ticket)).one()
        assert ticket.status == "waiting"  # the clocks pause while we wait for the details
        session.expunge(ticket)
    ((row, request),) = [(r, m) for r, m in outbox(app) if r.recipient == "zhao@example.net"]
    assert row.kind == "request_info" and "订单号" in body(request)
    answer = mail(
        "zhao@example.net",
        str(request["Reply-To"]),
        "姓名：赵敏\n商家：苏宁易购\n订单号 SN88812345，金额 199元。",
        subject=f"Re: {request['Subject']}",
        in_reply_to=str(request["Message-ID"]),
    )
    drop(app, answer)
    app.run_once()
    with app.sessions() as session:
        case = session.get(Ticket, ticket.id)
        assert case is not None and case.status == "received"  # back to await a decision
        assert case.complainant_name == "赵敏" and case.respondent == "苏宁易购"
        assert case.extra["order_number"] == "SN88812345" and case.extra["amount"] == "199.00"
    assert len([r for r, _ in outbox(app) if r.recipient == "zhao@example.net"]) == 1


def test_many_complainants_against_one_respondent_make_a_group_complaint(make_app) -> None:
    app = make_app(STAFF.replace("[escalation]", "[escalation]\ngroup_threshold = 3"))
    for n in range(3):
        text = (
            f"我在恒盛家电有限公司买的电暖器（订单号 HS2026{n:04d}，价格 399元）"
            f"用了两天就坏了。\n孙{n}"
        )
        drop(app, mail(f"c{n}@example.net", "support@example.com", text, subject="电暖器故障"))
        app.run_once()
    with app.sessions() as session:
        rows = session.execute(select(Ticket.priority, Ticket.extra).order_by(Ticket.id)).all()
    # One incident (the same heater, the same fault): the group's cases are all urgent, and
    # compliance and the supervisor get one group mail, not one per case.
    assert [p for p, _ in rows] == ["urgent", "urgent", "urgent"]
    assert rows[2][1]["group"]["size"] == 3
    alerts = sorted((r.kind, r.recipient) for r, _ in outbox(app) if r.kind in ("urgent", "group"))
    assert alerts == [("group", "compliance@example.com"), ("group", "lead@example.com")]


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ("#status closed", "不能从 received 转为 closed"),
        ("#priority asap", "优先级只能是"),
        ("#frobnicate", "未知命令"),
        ("#\u0430ccept", "含有形近或不可见字符"),
    ],
)
def test_a_chinese_reading_staff_member_is_told_in_chinese(
    make_app, lines: str, problem: str
) -> None:
    app: App = make_app(STAFF)
    ticket = Ticket(number="TS-20261124-0001", status="received")
    commands, _ = parse_commands(lines)
    (found,) = check_commands(app.config, ticket, commands, "zh-CN")
    assert problem in found and not found.isascii()
