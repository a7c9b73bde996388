"""One mailbox, however its address is written: the key rate limits and "is this us" count by.

support+TS-1.k3x9@Example.COM. -> support@example.com: case folded, the "+detail" (sub-address)
dropped, a trailing dot on the domain (the root label) dropped. Thirty plus-address variants of
one mailbox are one mailbox, and `support@example.com.` is our own address.
"""

from __future__ import annotations


def address_key(address: str) -> str:
    local, at, domain = address.strip().lower().rpartition("@")
    if not at:
        return domain
    return f"{local.partition('+')[0] or local}@{domain.rstrip('.')}"
