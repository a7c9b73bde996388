"""Our MX's Authentication-Results: the topmost trusted header decides, read per RFC 8601."""

from __future__ import annotations

import pytest

from handlers.authresults import domain_results

TRUSTED = ("mx.example.com",)


def raw(*headers: str) -> bytes:
    lines = [f"Authentication-Results: {h}" for h in headers]
    return ("\r\n".join([*lines, "From: li.na@example.cn", "", "5"]) + "\r\n").encode()


def test_only_the_topmost_trusted_header_counts() -> None:
    """Headers below our MX's may have come with the mail; one above it from another server
    is skipped."""
    mail = raw(
        "other.example.net; dmarc=pass header.from=example.cn",
        "mx.example.com; dmarc=fail header.from=example.cn",
        "mx.example.com; dmarc=pass header.from=example.cn",
    )
    found = domain_results(mail, "li.na@example.cn", TRUSTED)
    assert found is not None
    assert (found.proof(), found.dispute()) == (None, "dmarc=fail by mx.example.com")


def test_an_unreadable_trusted_header_on_top_hides_the_forged_one_below() -> None:
    mail = raw(
        "mx.example.com; dkim=pass " + "(" * 3000 + " header.d=example.cn",
        "mx.example.com; dkim=pass header.d=example.cn",
    )
    found = domain_results(mail, "li.na@example.cn", TRUSTED)
    assert found is not None and found.proof() is None
    assert found.dispute() == "unreadable Authentication-Results from mx.example.com"


@pytest.mark.parametrize(
    ("header", "dispute"),
    [
        ("mx.example.com; dmarc=fail (p=reject) header.from=example.cn", "dmarc=fail"),
        ("mx.example.com; dkim=fail header.d=example.cn", "dkim=fail"),
        ("mx.example.com; dkim=fail (no key)", "dkim=fail"),  # names no domain: about From's
        # a broken signature beside a good one of the same domain is no failure
        ("mx.example.com; dkim=fail header.d=example.cn; dkim=pass header.d=example.cn", None),
        ("mx.example.com; dkim=fail header.d=list.example.org; dmarc=none", None),  # not From's
        ("mx.example.com; spf=fail smtp.mailfrom=evil.test", None),  # SPF is not about From
        ("mx.example.com; dkim=none (helo=x; dmarc=fail header.from=example.cn)", None),
        ("mx.evil.test; dmarc=fail header.from=example.cn", None),  # not our MX
    ],
)
def test_a_failure_for_the_from_domain_is_a_dispute(header: str, dispute: str | None) -> None:
    found = domain_results(raw(header), "li.na@example.cn", TRUSTED)
    got = found.dispute() if found is not None else None
    assert (got or "").partition(" by ")[0] == (dispute or "")


def test_nothing_trusted_means_no_results() -> None:
    mail = raw("mx.example.com; dmarc=fail header.from=example.cn")
    assert domain_results(mail, "li.na@example.cn", ()) is None
    assert domain_results(raw(), "li.na@example.cn", TRUSTED) is None
