"""What the CLI shows: the case JSON of SPEC §5, outbox rows, and their text forms."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from daemon.store.models import OutboxMessage, Ticket, TimelineEntry


def iso(value: datetime | None, zone: ZoneInfo) -> str | None:
    if value is None:
        return None
    return value.astimezone(zone).replace(microsecond=0).isoformat()  # seconds are enough


def ticket_json(ticket: Ticket, zone: ZoneInfo, *, timeline: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "number": ticket.number,
        "status": ticket.status,
        "channel": ticket.channel,
        "category": ticket.category,
        "priority": ticket.priority,
        "language": ticket.language,
        "subject": ticket.subject,
        "complainant": {
            "name": ticket.complainant_name,
            "email": ticket.complainant_email,
            "phone": ticket.complainant_phone,
        },
        "respondent": ticket.respondent,
        # A group complaint (handlers/group.py): {"id": its first case, "size": when this joined}
        "group": (ticket.extra or {}).get("group"),
        # Registration details beyond SPEC §5 (order number...); not the gist handlers/group.py
        # compares cases by.
        "extra": {k: v for k, v in (ticket.extra or {}).items() if k != "gist"},
        "assignee": ticket.assignee,
        "escalation_level": ticket.escalation_level,
        "created_at": iso(ticket.created_at, zone),
        "acknowledged_at": iso(ticket.acknowledged_at, zone),
        "first_response_at": iso(ticket.first_response_at, zone),
        "accepted_at": iso(ticket.accepted_at, zone),
        "resolved_at": iso(ticket.resolved_at, zone),
        "closed_at": iso(ticket.closed_at, zone),
        "reopened_count": ticket.reopened_count,
        "due": {
            "first_response": iso(ticket.due_first_response, zone),
            "acceptance": iso(ticket.due_acceptance, zone),
            "resolution": iso(ticket.due_resolution, zone),
        },
        "satisfaction": {
            "score": ticket.satisfaction_score,
            "answered_at": iso(ticket.satisfaction_at, zone),
            "comment": ticket.satisfaction_comment,
        },
    }
    if timeline:
        data["timeline"] = [entry_json(e, zone) for e in ticket.timeline]
    return data


def entry_json(entry: TimelineEntry, zone: ZoneInfo) -> dict[str, Any]:
    found = _entry_fields(entry, zone)
    if entry.kind == "escalation":  # SPEC §5: level, clock and who was told
        found["escalation"] = {k: entry.data.get(k) for k in ("level", "clock", "step", "told")}
    return found


def _entry_fields(entry: TimelineEntry, zone: ZoneInfo) -> dict[str, Any]:
    return {
        "at": iso(entry.at, zone),
        "kind": entry.kind,
        "actor": entry.actor,
        "direction": entry.direction,
        "message_id": entry.message_id,
        "subject": entry.subject,
        "text": entry.text,
        "internal": entry.internal,
        "attachments": [
            {
                "filename": a.filename,
                "size": a.size,
                "sha256": a.sha256,
                "content_type": a.content_type,
            }
            for a in entry.attachments
        ],
    }


def outbox_json(row: OutboxMessage, zone: ZoneInfo) -> dict[str, Any]:
    return {
        "id": row.id,
        "status": row.status,
        "kind": row.kind,
        "recipient": row.recipient,
        "subject": row.subject,
        "message_id": row.message_id,
        "attempts": row.attempts,
        "created_at": iso(row.created_at, zone),
        "next_attempt_at": iso(row.next_attempt_at, zone),
        "sent_at": iso(row.sent_at, zone),
        "last_error": row.last_error,
    }


def ticket_text(ticket: Ticket, zone: ZoneInfo) -> str:
    data = ticket_json(ticket, zone, timeline=False)
    lines = [f"{ticket.number}  [{ticket.status}]  {ticket.subject}"]
    c = data["complainant"]
    lines.append(f"  complainant: {c['name'] or ''} <{c['email']}>  language: {ticket.language}")
    by = (ticket.extra or {}).get("classified_by")
    lines.append(
        f"  category: {ticket.category}  priority: {ticket.priority}"
        + (f" ({by})" if by else "")
        + f"  assignee: {ticket.assignee or '-'}  channel: {ticket.channel}"
    )
    if isinstance(group := data["group"], dict):
        lines.append(
            f"  group complaint: {group.get('id')} ({group.get('size')} cases when joined)"
        )
    lines.append(
        f"  created: {data['created_at']}  due: "
        + ", ".join(f"{k} {v}" for k, v in data["due"].items() if v)
    )
    for entry in ticket.timeline:
        who = f"{entry.actor}{' (internal)' if entry.internal else ''}"
        lines.append(f"- {iso(entry.at, zone)} {entry.kind} {who}: {entry.subject or ''}")
        if entry.kind == "status":
            lines.append(
                f"    {entry.data.get('from')} -> {entry.data.get('to')}"
                + (f" ({entry.text})" if entry.text else "")
            )
        elif entry.text:
            lines.extend(f"    {line}" for line in entry.text.strip().splitlines()[:20])
        for a in entry.attachments:
            lines.append(f"    [attachment] {a.filename} ({a.size} bytes, sha256 {a.sha256[:12]})")
    return "\n".join(lines)


def status_text(report: dict[str, Any]) -> str:
    """`caseloop status` for people (the report is status_report's, `status --json`)."""
    out: list[str] = []
    for src in report["sources"]:
        state = "STALLED" if src["stalled"] else "FAILING" if src["failing"] else "ok"
        backlog = "-" if src["backlog"] is None else src["backlog"]
        out.append(
            f"source {src['name']}: {state}; {src['describe']}; "
            f"last poll {src['last_poll_at'] or 'never'}; backlog {backlog}"
            + (f"; last error {src['last_error']}" if src["last_error"] else "")
        )
    box = report["outbox"]
    out.append(f"outbox: {box['queued']} queued, {box['failed']} failed, {box['sent']} sent")
    cases = report["cases"]
    out.append(
        f"cases: {cases['open']} open, {cases['overdue']} overdue, {cases['urgent']} urgent open"
    )
    for key, value in cases["by_status"].items():
        out.append(f"  {key}: {value}")
    out.append("next: " + ", ".join(f"{job} {when or '-'}" for job, when in report["next"].items()))
    for instance in report["instances"]:
        holds = ", ".join(instance["holds"]) or "nothing"
        out.append(
            f"instance {instance['id']} ({instance['mode']}, {instance['version']}): "
            f"heartbeat {instance['heartbeat_at']}; holds {holds}"
        )
    if not report["instances"]:
        out.append("instances: none running")
    for lease in report["leases"]:
        if lease["holder_alive"] is False:
            out.append(f"lease {lease['name']}: held by {lease['holder']} until {lease['until']}")
    return "\n".join(out)
