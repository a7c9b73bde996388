"""Staff acting by mail: proof first, then the command lines applied and the rest relayed.

A reply from a configured staff address about a case is honoured only with proof (LESSONS 4):
it was sent to the per-staff reply token we gave that person for that case, or the receiving
server's Authentication-Results (from a trusted authserv-id) show DKIM or DMARC passing for the
sender's domain. Without proof the mail is a third party's: recorded for staff, nothing acted,
nothing relayed. Command lines at the top (`#accept`, `#reject <reason>`, `#status <s>`,
`#assign <address>`, `#priority <p>`, `#category <c>`, `#note <text>`) are all checked before
any is applied; one bad line and the staff member gets a templated error and nothing changes.
A line that only looks like a command (`#аccept` with a Cyrillic а, a zero-width space inside,
bidi controls reordering it) is such a bad line: answered with the error, never relayed.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from bidi import get_display

from daemon.config import PRIORITIES, Config
from daemon.store.models import Ticket
from handlers import staff
from handlers.authresults import domain_results
from handlers.context import Context, Services
from handlers.intake import record_message
from handlers.notify import queue_mail
from handlers.threading import recipients, staff_reply_address, staff_token_holder
from handlers.workflow import STATUSES, allowed_moves, apply_transition, mails_consumer

COMMANDS = ("accept", "reject", "status", "assign", "priority", "category", "note")
FREE_TEXT = ("reject", "note")  # commands whose argument is words, not a keyword
_COMMAND = re.compile(r"^#([A-Za-z_]+)(?:\s+(.*))?$")
_ATTEMPT = re.compile(r"^#([^\W\d]+)(?:\s+(.*))?$")  # a number sign and a word, any script
# Letters of other scripts drawn like Latin ones (after NFKC), and signs drawn like "#".
_LOOKALIKES = str.maketrans(
    "асеорхуіјѕһԁԛԝӏАВСЕНІЈКМОРЅТХУ"  # Cyrillic
    "αοριυνκτΑΒΕΖΗΙΚΜΝΟΡΤΥΧ"  # Greek
    "♯⋕",
    "aceopxyijshdqwlABCEHIJKMOPSTXYaopiuvktABEZHIKMNOPTYX##",
)
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


@dataclass(frozen=True)
class Command:
    name: str
    argument: str
    line: str
    lookalike: str = ""  # the look-alike or invisible characters of a line posing as a command


def _invisible(ch: str) -> bool:
    return unicodedata.category(ch) == "Cf"  # zero-width spaces and joiners, bidi controls, BOM


def _visible(text: str) -> str:
    return "".join(ch for ch in text if not _invisible(ch)).strip()


def _oddities(text: str, word: str = "") -> list[str]:
    """The invisible characters and look-alike letters in the text, and the letters of the
    command word that are not Latin, named once each."""
    odd = [ch for ch in text if _invisible(ch) or ord(ch) in _LOOKALIKES]
    odd += [ch for ch in word if not ch.isascii()]
    return [f"U+{ord(ch):04X} {unicodedata.name(ch, '')}".strip() for ch in dict.fromkeys(odd)]


def _command(line: str) -> Command | None:
    """The command a top line is, or poses as; None when it is text."""
    match = _COMMAND.match(line)
    if match is not None:
        name = match.group(1).lower()
        checked = f"#{match.group(1)}" if name in FREE_TEXT else line
        if not _oddities(checked):
            return Command(name, (match.group(2) or "").strip(), line)
    readings = [_visible(line)]  # as written, and as shown when bidi controls reorder it
    if _BIDI & set(line):
        shown_as = line.encode("utf-8", "replace").decode("utf-8")  # no lone surrogates
        readings.append(_visible(str(get_display(shown_as))))
    for reading in readings:
        attempt = _ATTEMPT.match(reading.translate(_LOOKALIKES))
        if attempt is not None:
            shown = "".join(f"<U+{ord(ch):04X}>" if _invisible(ch) else ch for ch in line)
            name, argument = attempt.group(1).lower(), (attempt.group(2) or "").strip()
            odd = _oddities(line, name) if _oddities(line) else []  # "#接受" is just unknown
            return Command(name, argument, shown, ", ".join(odd))
    return None


def parse_commands(text: str) -> tuple[list[Command], str]:
    """The command lines at the top of a staff reply, and the text after them."""
    lines = text.split("\n")
    commands: list[Command] = []
    i = 0
    while i < len(lines):
        line = unicodedata.normalize("NFKC", lines[i]).strip()  # ＃ from a Chinese keyboard
        if not _visible(line):
            i += 1
            continue
        command = _command(line)
        if command is None:
            break
        commands.append(command)
        i += 1
    return commands, "\n".join(lines[i:]).strip()


def move_of(command: Command) -> tuple[str, str] | None:
    """(target status, reason) of a command that moves the case, else None.

    `#status rejected <reason>` is `#reject <reason>`; any other `#status` takes one word.
    """
    if command.name == "accept":
        return "accepted", ""
    if command.name == "reject":
        return "rejected", command.argument
    if command.name == "status":
        target, _, reason = command.argument.partition(" ")
        return target.strip(), reason.strip()
    return None


# What the staff error mail says of each problem, in the staff member's language
PROBLEMS: dict[str, dict[str, str]] = {
    "lookalike": {
        "en": "{line}: not a command as written, it has look-alike or invisible characters "
        "({odd}); type {retype} again in plain Latin letters",
        "zh-CN": "{line}：含有形近或不可见字符（{odd}），不是有效命令；"
        "请用半角英文字母重新输入 {retype}",
    },
    "unknown": {
        "en": "{line}: unknown command (commands: {commands})",
        "zh-CN": "{line}：未知命令（可用命令：{commands}）",
    },
    "argument": {
        "en": "{line}: #{name} needs an argument",
        "zh-CN": "{line}：#{name} 需要参数",
    },
    "already": {"en": "{line}: {number} is already {new}", "zh-CN": "{line}：{number} 已是 {new}"},
    "status": {
        "en": "{line}: unknown status {new!r} (statuses: {choices})",
        "zh-CN": "{line}：未知状态 {new!r}（可用状态：{choices}）",
    },
    "move": {
        "en": "{line}: {number}: cannot go from {status} to {new} (allowed: {choices})",
        "zh-CN": "{line}：{number} 不能从 {status} 转为 {new}（可转为：{choices}）",
    },
    "reason": {
        "en": "{line}: a rejection needs a reason (#reject <reason>)",
        "zh-CN": "{line}：不予受理须写明原因（#reject <原因>）",
    },
    "staff": {"en": "{line}: not a staff address", "zh-CN": "{line}：不是工作人员地址"},
    "priority": {
        "en": "{line}: priorities are {choices}",
        "zh-CN": "{line}：优先级只能是 {choices}",
    },
    "category": {
        "en": "{line}: categories are {choices}",
        "zh-CN": "{line}：类别只能是 {choices}",
    },
}


def check_commands(
    config: Config, ticket: Ticket, commands: list[Command], language: str = "en"
) -> list[str]:
    """Every problem with these commands, in order, in `language`; empty when all can be
    applied."""
    problems: list[str] = []

    def problem(code: str, c: Command, **values: object) -> None:
        words = PROBLEMS[code]
        problems.append(words.get(language, words["en"]).format(line=c.line, **values))

    status, resume_to = ticket.status, (ticket.extra or {}).get("resume_to")
    for c in commands:
        move = move_of(c)
        if c.lookalike:
            retype = (
                f"#{c.name}"
                if c.name in COMMANDS
                else ("该命令" if language == "zh-CN" else "the command")
            )
            problem("lookalike", c, odd=c.lookalike, retype=retype)
        elif c.name not in COMMANDS:
            problem("unknown", c, commands="#" + ", #".join(COMMANDS))
        elif c.name != "accept" and not c.argument:
            problem("argument", c, name=c.name)
        elif move is not None:
            target, reason = move
            allowed = allowed_moves(status, resume_to)
            if target == status:
                problem("already", c, number=ticket.number, new=target)
            elif target not in STATUSES:
                problem("status", c, new=target, choices=", ".join(STATUSES))
            elif target not in allowed:
                choices = ", ".join(allowed) or "-"
                problem("move", c, number=ticket.number, status=status, new=target, choices=choices)
            elif target == "rejected" and not reason:
                problem("reason", c)
            else:
                resume_to = status if target == "waiting" else resume_to
                status = target
        elif c.name == "assign" and config.staff_member(c.argument) is None:
            problem("staff", c)
        elif c.name == "priority" and c.argument not in PRIORITIES:
            problem("priority", c, choices=", ".join(PRIORITIES))
        elif c.name == "category" and c.argument not in config.categories:
            problem("category", c, choices=", ".join(config.categories))
    return problems


def without_own_address(text: str, address: str) -> str:
    """The staff text minus lines giving the staff member's own address (a plain signature)."""
    lines = [line for line in text.split("\n") if address not in line.lower()]
    return "\n".join(lines).strip()


def dkim_proof(raw: bytes, sender: str, trusted: tuple[str, ...]) -> str | None:
    """How the receiving server vouched for the sender's domain, or None.

    Only the topmost Authentication-Results header from a trusted authserv-id counts: that is
    the one our own MX added (RFC 8601 §5 has it remove look-alikes from outside).
    """
    results = domain_results(raw, sender, trusted)
    return None if results is None else results.proof()


UNPROVEN = {
    "en": "nothing in the mail proved it was yours (it did not go to the Reply-To address of "
    "our mail to you, and no trusted DKIM signature vouched for it): reply to one of our "
    "mails about the case, keeping its Reply-To",
    "zh-CN": "无法确认此邮件出自您本人（未回复到我们邮件的回复地址，也没有可信的 DKIM 签名）："
    "请直接回复我们关于该投诉的邮件，保留其回复地址",
}


def _tell_why(
    ctx: Context,
    ticket: Ticket,
    sender: str,
    problems: list[str],
    intent: str,
    in_reply_to: str | None = None,
) -> None:
    """The staff error mail: what was not done and why, to the sender's own reply address."""
    queue_mail(
        ctx.session,
        ctx.config,
        ctx.templates,
        ticket=ticket,
        kind="staff_error",
        intent=intent,
        now=ctx.now,
        recipient=sender,
        internal=True,
        reply_to=staff_reply_address(ctx.session, ctx.config, ticket, sender, ctx.now),
        in_reply_to=in_reply_to,
        context={"problems": problems},
    )


class StaffMail:
    name = "staff-mail"
    description = "a staff member's reply: proven, its commands applied and its text relayed"

    def process(self, ctx: Context) -> None:
        msg, prep, config = ctx.message, ctx.prep, ctx.config
        sender = msg.from_address.lower()
        holder = staff_token_holder(ctx.session, config, recipients(msg))
        if ctx.ticket is None and holder is not None:
            ctx.ticket = holder[0]  # the token names the case even without threading headers
        ticket = ctx.ticket
        escalation = config.escalation
        supervisor = sender in {
            a.lower() for a in (*escalation.supervisors, *escalation.urgent_notify)
        }
        if ticket is None or prep.automatic:
            return
        if config.staff_member(sender) is None and not supervisor:
            return
        if sender == ticket.complainant_email:
            return  # a staff member who is this case's complainant writes as the consumer
        proof = None
        if holder is not None and holder[0].id == ticket.id and holder[1] == sender:
            proof = "staff reply token"
        elif msg.sender_header == "from":  # DKIM/DMARC vouch for From's domain, nothing else
            proof = dkim_proof(msg.raw, sender, config.escalation.trusted_authserv_ids)
        if proof is None:
            record_message(ctx, internal=True, data={"claimed_staff": sender, "unproven": True})
            prep.notes.append(
                f"{ticket.number}: mail from staff address {sender} without proof "
                "(no staff reply token, no trusted DKIM): recorded, nothing acted or relayed"
            )
            self._unproven(ctx, ticket, sender)
            ctx.stop("entry", "unproven staff mail: recorded as a third party's")
            return
        commands, text = parse_commands(prep.new_text or msg.text)
        text = without_own_address(text, sender)
        record_message(
            ctx,
            internal=True,
            data={"staff": sender, "proof": proof, "commands": [c.line for c in commands]},
        )
        services = ctx.services
        problems = check_commands(config, ticket, commands, config.language_of(sender))
        if problems:
            intent = f"staff-error:{ticket.number}:{ctx.entry_id}"
            _tell_why(ctx, ticket, sender, problems, intent, in_reply_to=msg.message_id)
            ctx.stop("entry", f"staff mail from {sender}: commands refused, nothing applied")
            return
        self._apply(ctx, services, ticket, sender, commands, text)
        ctx.stop("entry", f"staff mail from {sender} ({proof})")

    @staticmethod
    def _unproven(ctx: Context, ticket: Ticket, sender: str) -> None:
        """Tell the configured address why nothing was done (once an hour per case: a forger
        cannot use it to flood our staff); the mail itself stays with staff on the case."""
        intent = f"staff-unproven:{ticket.number}:{sender}:{ctx.now:%Y%m%d%H}"
        why = UNPROVEN.get(ctx.config.language_of(sender), UNPROVEN["en"])
        _tell_why(ctx, ticket, sender, [why], intent)

    def _apply(
        self,
        ctx: Context,
        services: Services,
        ticket: Ticket,
        sender: str,
        commands: list[Command],
        text: str,
    ) -> None:
        """Apply checked commands in order; the text goes with the last move the consumer is
        told about, or else is relayed to them as a reply."""
        moves = [move_of(c) for c in commands]
        status, carrier = ticket.status, None
        for i, move in enumerate(moves):
            if move is not None:
                if mails_consumer(services.config, status, move[0]):
                    carrier = i  # the text goes with the last move the consumer is told of
                status = move[0]
        for i, (c, move) in enumerate(zip(commands, moves, strict=True)):
            message = text if i == carrier else None
            if move is not None:
                apply_transition(
                    ctx.session,
                    services,
                    ticket,
                    move[0],
                    actor=sender,
                    now=ctx.now,
                    reason=move[1] or None,
                    message=message or None,
                )
            elif c.name == "note":
                staff.note(ctx.session, ticket, c.argument, actor=sender, now=ctx.now)
            else:
                field = "assignee" if c.name == "assign" else c.name
                staff.set_fields(
                    ctx.session, services, ticket, actor=sender, now=ctx.now, **{field: c.argument}
                )
        if text and carrier is None:
            staff.reply(ctx.session, services, ticket, text, actor=sender, now=ctx.now)
