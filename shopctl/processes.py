"""The launcher's processes as the operating system sees them (Linux /proc):
which is which, and how much memory each used at its peak."""

from __future__ import annotations

import os
from pathlib import Path


def children(parent: int) -> dict[str, int]:
    """Live child processes of ``parent`` (a launcher): name (api, redis,
    payment-1, ...) -> pid. Empty where there is no /proc."""
    found: dict[str, int] = {}
    for pid in child_pids(parent):
        entry = Path("/proc") / str(pid)
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = dict(
                item.split(b"=", 1) for item in (entry / "environ").read_bytes().split(b"\0")
                if b"=" in item
            )
        except (OSError, ValueError):
            continue  # it exited meanwhile
        if any(b"server" in part for part in cmdline[:1]):
            found["redis"] = pid
        elif b"order_api" in cmdline:
            found["api"] = pid
        elif b"WORKER_NAME" in environ:
            found[environ[b"WORKER_NAME"].decode()] = pid
    return found


def child_pids(parent: int) -> list[int]:
    """Pids of the live child processes of ``parent``; empty where there is no
    /proc. Asks the kernel for the children of the parent's main thread (where
    its forks and spawns happen), which is cheap enough to do five times a
    second; without that file, walks all of /proc."""
    try:
        listed = Path(f"/proc/{parent}/task/{parent}/children").read_text()
    except OSError:
        pass
    else:
        return [int(pid) for pid in listed.split()]
    return _walk_for_children(parent)


def _walk_for_children(parent: int) -> list[int]:
    found: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue  # it exited meanwhile
    return found


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident memory (VmHWM), in MB; None if unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def cpu_seconds(pid: int) -> float | None:
    """CPU time the process has used so far (user + system), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
