"""The signature on every delivery of a message store, and how a receiver
checks it.

The header (``X-Shop-Signature`` unless the store names another) is
``t=<unix seconds>,v1=<hex>``, where ``<hex>`` is the HMAC-SHA256, keyed by
the store's secret, of ``<t>.<the body's bytes>``. A receiver recomputes it
over the body exactly as it arrived, compares in constant time, and refuses
a timestamp too far from its own clock (a replayed capture). The scheme is
the one Stripe and others use, so receivers have code for it already.
"""

from __future__ import annotations

import hashlib
import hmac
import time


def sign(secret: str, body: bytes, at: int | None = None) -> str:
    """The header's value for ``body``, signed now (or at ``at``)."""
    t = int(time.time()) if at is None else at
    return f"t={t},v1={_mac(secret, t, body)}"


def verify(secret: str, header: str, body: bytes, tolerance_s: int = 300,
           now: float | None = None) -> bool:
    """Whether ``header`` signs ``body`` with ``secret``, within ``tolerance_s``
    of ``now``."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    return hmac.compare_digest(parts.get("v1", ""), _mac(secret, t, body))


def _mac(secret: str, t: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
