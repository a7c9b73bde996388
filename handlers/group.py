"""Group complaints (群体性投诉): many consumers against one respondent make a new case urgent.

Cases keep the respondent's name normalised (register.normalise_respondent) in respondent_key,
indexed with created_at, so counting the complainants of one respondent within a window is one
look-up.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from daemon.config import Config
from daemon.store import writes
from handlers.context import Context
from handlers.register import normalise_respondent


def is_group_complaint(
    session: Session,
    config: Config,
    respondent: str,
    complainant_email: str,
    now: datetime,
) -> bool:
    """At least group_threshold distinct complainants (this one included) about one respondent
    on cases opened within group_window before `now`."""
    threshold = config.escalation.group_threshold
    key = normalise_respondent(respondent)
    if not key or threshold == 0:  # 0: counting is off (a desk whose cases share a respondent)
        return False
    # Within one transaction at one `now` (an intake batch), the window stays put and cases
    # are only added: a respondent found to be a group complaint stays one, unasked. A
    # rollback forgets it (writes.memo): the case that made the group may be gone.
    known = writes.memo(session, "group-respondents")
    if known.get(key) == now:
        return True
    since = now - config.escalation.group_window.as_timedelta()
    # Enough distinct complainants is all that is asked: the scan stops at the threshold.
    emails = writes.complainants(session, key, since, now, threshold)
    emails.add(complainant_email.strip().lower())
    if len(emails) >= threshold:
        known[key] = now
        return True
    return False


class GroupComplaint:
    name = "group-complaint"
    description = (
        "the case a mail is about to open, against a respondent many consumers named, is urgent"
    )

    def process(self, ctx: Context) -> None:
        prep = ctx.prep
        respondent = prep.fields.get("respondent")
        if ctx.ticket is not None or prep.automatic or not respondent or prep.message is None:
            return
        if not is_group_complaint(
            ctx.session, ctx.config, str(respondent), prep.message.from_address, ctx.now
        ):
            return
        ctx.opening["priority"] = "urgent"
        ctx.opening["extra"] = {**ctx.opening.get("extra", {}), "group_complaint": True}
        prep.notes.append(
            f"group complaint: {ctx.config.escalation.group_threshold} or more complainants "
            f"about this respondent within {ctx.config.escalation.group_window}"
        )
