"""API tokens: random bearer tokens with a role, stored hashed in Redis.

A token reads ``shop_<id>_<secret>``. The id (64 random bits) names its
record, ``keys.token(id)``; the record keeps the SHA-256 of the secret (256
random bits), never the secret itself, so whoever reads Redis cannot act as
anyone. Verifying is one read by id and a constant-time comparison of the
digests. A plain SHA-256 is enough: a slow password hash protects guessable
secrets, and these are random.

Roles:

- ``operator``: the catalog, stock and prices, customers and their balances,
  ``/ops/*`` and dead letters;
- ``customer``: acts as one customer: places its orders, reads its own
  orders and balance.

A token may expire (``ttl_s``): its record carries the time and expires in
Redis with it. Names are unique; ``revoke`` deletes by name.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

from shop import keys
from shop.topology import customer_partition
from streams.envelope import utc_now
from streams.scripts import Script, evaluate
from streams.topology import Topology

Role = Literal["operator", "customer"]
ROLES: tuple[Role, ...] = ("operator", "customer")
PREFIX = "shop_"
_TOKEN = re.compile(r"shop_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_FIELDS = ("digest", "name", "role", "customer_id", "expires_ms")


class TokenError(ValueError):
    """A token cannot be created or revoked as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a token's name and role, and for a customer token the
    customer it acts as."""

    name: str
    role: Role
    customer_id: str | None = None

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as ``shopctl token list`` shows it (never its secret)."""

    name: str
    role: Role
    customer_id: str | None
    created_at: str
    expires_at: str | None


# Claim the name and write the record together: a taken name changes nothing.
# Tokens live in partition 0. KEYS: token names, the new token's record.
# ARGV: name, id, then the record's field/value pairs; the TTL in ms ('' for none).
CREATE = Script(
    "create_token",
    """
local ttl = table.remove(ARGV)
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 'name_taken' end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], unpack(fields))
if ttl ~= '' then redis.call('PEXPIRE', KEYS[2], ttl) end
return 'created'
""",
)


def parse_ttl(text: str) -> int:
    """``30d``, ``12h``, ``90m``, ``45s`` (or plain seconds) -> seconds."""
    match = re.fullmatch(r"(\d{1,9})([smhd]?)", text.strip())
    if not match or int(match[1]) == 0:
        raise TokenError(f"ttl {text!r}: give a positive number with s, m, h or d, e.g. 30d")
    return int(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def create(
    r: Any, topology: Topology, role: Role, *, name: str | None = None,
    customer_id: str | None = None, ttl_s: int | None = None,
) -> tuple[str, TokenInfo]:
    """A new token: returns its text (shown once, never stored) and its record."""
    if role not in ROLES:
        raise TokenError(f"role {role!r}: one of {', '.join(ROLES)}")
    if (role == "customer") != (customer_id is not None):
        raise TokenError("a customer token names its customer (--customer ID), "
                         "and only a customer token does")
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    name = name or f"{customer_id or role}-{token_id[:6]}"
    if not _NAME.fullmatch(name):
        raise TokenError(f"name {name!r}: 1-64 letters, digits, '_', '.', '-'")
    expires_ms = int(time.time() * 1000) + ttl_s * 1000 if ttl_s else None
    info = TokenInfo(name, role, customer_id, utc_now(),
                     _utc(expires_ms) if expires_ms else None)
    record = {
        "digest": digest(secret), "name": name, "role": role,
        "customer_id": customer_id or "", "created_at": info.created_at,
        "expires_ms": str(expires_ms or ""),
    }
    # A customer is in a partition of its own, and never deleted: checked apart.
    if customer_id is not None and not await r.exists(
        keys.customer(customer_id, topology.tag(customer_partition(customer_id,
                                                                   topology.partitions)))
    ):
        raise TokenError(f"customer {customer_id!r} does not exist; create it first")
    tag = topology.tag(0)
    answer = await evaluate(r, CREATE, [keys.token_names(tag), keys.token(token_id, tag)], [
        name, token_id, *(part for item in record.items() for part in item),
        str(ttl_s * 1000) if ttl_s else "",
    ])
    if answer == "name_taken":
        raise TokenError(f"a token named {name!r} exists: revoke it first, or choose "
                         "another --name")
    return f"{PREFIX}{token_id}_{secret}", info


async def verify(r: Any, topology: Topology, presented: str) -> Principal | None:
    """The principal a token acts as, or None for a token that is malformed,
    unknown, revoked or expired."""
    match = _TOKEN.fullmatch(presented)
    if match is None:
        return None
    stored, secret = await r.execute_command(
        "HMGET", keys.token(match[1], topology.tag(0)), *_FIELDS), match[2]
    found, name, role, customer_id, expires_ms = stored
    if found is None or not hmac.compare_digest(digest(secret), found):  # constant time
        return None
    if expires_ms and int(expires_ms) <= time.time() * 1000:
        return None
    return Principal(name, role, customer_id or None)


async def list_tokens(r: Any, topology: Topology) -> list[TokenInfo]:
    """Every live token, by name; names of tokens that expired are forgotten."""
    tag = topology.tag(0)
    names: dict[str, str] = await r.hgetall(keys.token_names(tag))
    async with r.pipeline(transaction=False) as pipe:
        for token_id in names.values():
            pipe.hgetall(keys.token(token_id, tag))
        records = await pipe.execute()
    live, gone = [], []
    for name, record in zip(names, records, strict=True):
        if not record:
            gone.append(name)
            continue
        expires = record.get("expires_ms")
        live.append(TokenInfo(name, record["role"], record.get("customer_id") or None,
                              record.get("created_at", ""),
                              _utc(int(expires)) if expires else None))
    if gone:
        await r.hdel(keys.token_names(tag), *gone)
    return sorted(live, key=lambda t: t.name)


# Delete the record and the name together, if the name still names that record.
# KEYS: token names, the record. ARGV: name, id.
REVOKE = Script(
    "revoke_token",
    """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[2])
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
""",
)


async def revoke(r: Any, topology: Topology, name: str) -> bool:
    """Revoke the token with this name at once; False if there is none."""
    tag = topology.tag(0)
    token_id = await r.hget(keys.token_names(tag), name)
    if token_id is None:
        return False
    return bool(await evaluate(r, REVOKE, [keys.token_names(tag), keys.token(token_id, tag)],
                               [name, token_id]))


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))
