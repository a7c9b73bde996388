"""What our MX's Authentication-Results header (RFC 8601) says about a sender's domain.

Only the topmost header whose authserv-id is trusted counts: our MX adds it above the mail's
own headers, so any header below it (even one naming our MX) may have been written by the
sender. The header is read with the `authres` parser, so results inside comments or quoted
strings (`smtp.mailfrom="x;dkim=pass header.d=example.com"@evil`) are never results. A header
the parser cannot read (or an absurdly long one) proves nothing and is not taken as clean.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32

import authres

MAX_HEADER = 16_384  # characters; a real one is well under 2 KB, parsing is linear but slow


@dataclass(frozen=True)
class DomainResults:
    """The trusted header's DKIM and DMARC results for one domain."""

    authserv_id: str
    passed: tuple[str, ...] = ()  # "dkim", "dmarc": passing for the domain
    failed: tuple[str, ...] = ()  # "dmarc" failing; "dkim" failing with no dkim pass
    unreadable: bool = False  # the header could not be parsed: it vouches for nothing

    def proof(self) -> str | None:
        """How the header vouches for the domain ("dkim=pass by mx.example.com"), or None."""
        if self.unreadable or not self.passed:
            return None
        return f"{self.passed[0]}=pass by {self.authserv_id}"

    def dispute(self) -> str | None:
        """Why the domain is not the sender's by this header ("dmarc=fail by ..."), or None."""
        if self.unreadable:
            return f"unreadable Authentication-Results from {self.authserv_id}"
        if self.failed:
            return f"{self.failed[0]}=fail by {self.authserv_id}"
        return None


def _headers(raw: bytes) -> list[str]:
    parsed = BytesHeaderParser(policy=compat32).parsebytes(raw)
    return [" ".join(str(v).split()) for v in parsed.get_all("Authentication-Results") or []]


def _named_domain(result: authres.AuthenticationResult) -> str | None:
    """The domain a DKIM or DMARC result is about (header.d / header.from / header.i)."""
    props = {f"{p.type}.{p.name}".lower(): str(p.value) for p in result.properties}
    named = props.get("header.d") or props.get("header.from") or props.get("header.i")
    return named.strip('"').rpartition("@")[2].lower() if named else None


def _parse(text: str) -> authres.AuthenticationResultsHeader | None:
    if len(text) > MAX_HEADER:
        return None
    try:
        return authres.all_features().parse_value(text)
    except Exception:  # a third-party parser on hostile input (even RecursionError): no proof
        return None


def domain_results(raw: bytes, address: str, trusted: Sequence[str]) -> DomainResults | None:
    """The topmost trusted header's results for the domain of `address`; None when no header
    from a trusted authserv-id is there (or none is configured)."""
    wanted = {t.lower() for t in trusted}
    if not wanted:
        return None
    domain = address.rpartition("@")[2].lower()
    for text in _headers(raw):
        named = sorted(wanted & set(re.split(r'[\s;()"]+', text.lower())))
        if not named:
            continue  # cannot be our MX's: not worth parsing (a mail may bring many)
        header = _parse(text)
        if header is None:  # it may be our MX's, so it decides: nothing below can be believed
            return DomainResults(authserv_id=named[0], unreadable=True)
        if (header.authserv_id or "").lower() not in wanted:
            continue
        passed: list[str] = []
        failed: list[str] = []
        for result in header.results:
            method, outcome = str(result.method).lower(), str(result.result).lower()
            if method not in ("dkim", "dmarc"):
                continue
            named_domain = _named_domain(result)
            if outcome == "pass" and named_domain == domain:
                passed.append(method)
            elif outcome == "fail" and named_domain in (domain, None):
                failed.append(method)
        if "dkim" in passed:  # one good signature of the domain outweighs a broken one
            failed = [m for m in failed if m != "dkim"]
        return DomainResults(header.authserv_id.lower(), tuple(passed), tuple(failed))
    return None
