"""The demo tokens ``shopctl up`` keeps in the data folder, one file each
(``.data/tokens/alice``), so that the README's walk-through can read them
in bash (``$(cat .data/tokens/alice)``) and PowerShell
(``Get-Content .data/tokens/alice``).

A token is kept while it still works. One that no longer does (revoked, or
the data behind it gone) is made anew under the same name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from access import tokens
from shop.topology import SHOP
from streams.topology import stored_topology

OPERATOR = "operator"


def folder(data_dir: Path) -> Path:
    return data_dir / "tokens"


async def ensure(r: Any, data_dir: Path, customers: list[str]) -> dict[str, str]:
    """A working token for an operator and for each of ``customers``, by who
    it is for (``operator``, ``alice``, ...); made when missing."""
    where = folder(data_dir)
    where.mkdir(parents=True, exist_ok=True)
    topology = await stored_topology(r, SHOP)
    found: dict[str, str] = {}
    for who in (OPERATOR, *customers):
        path = where / who
        token = path.read_text().strip() if path.is_file() else ""
        if not token or await tokens.verify(r, topology, token) is None:
            name = f"demo-{who}"
            await tokens.revoke(r, topology, name)
            token, _ = await tokens.create(
                r, topology, "operator" if who == OPERATOR else "customer", name=name,
                customer_id=None if who == OPERATOR else who)
            write_secret(path, token)
        found[who] = token
    return found


def write_secret(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (a reader never finds it empty or
    half written), readable by its owner only from its first byte."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")
    os.replace(partial, path)
