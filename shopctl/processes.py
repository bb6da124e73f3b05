"""The launcher's processes as the operating system sees them (Linux /proc):
which is which, and how much memory each used at its peak; and starting them
so that they die with the launcher."""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def children(parent: int) -> dict[str, int]:
    """Live child processes of ``parent`` (a launcher): name (api, redis,
    redis-7000 for a cluster's node, payment-1, ...) -> pid. Empty where there
    is no /proc."""
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
            # A cluster's nodes by port (redis-7000, ...); the one server as "redis". The
            # server sets its own title: "valkey-server 127.0.0.1:7000 [cluster]".
            title = b" ".join(cmdline)
            port = re.search(rb":(\d+)", title)
            if b"[cluster]" in title and port:
                found[f"redis-{port[1].decode()}"] = pid
            else:
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


def _death_signal() -> Callable[[], None] | None:
    """Where the kernel can do it (Linux), a function for ``Popen(preexec_fn=)``
    that has the child sent SIGTERM when the process that started it dies, even
    by SIGKILL: the launcher's children never outlive it. None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # bound now, not in the child
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def die_with_parent() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # it died before the line above: go now
            os.kill(os.getpid(), signal.SIGTERM)

    return die_with_parent


PR_SET_PDEATHSIG = 1


def start_tied(args: list[str], **popen: Any) -> subprocess.Popen:
    """``subprocess.Popen`` for a child that dies with the process starting it
    (see ``_death_signal``). Call it from the thread that lives as long as the
    process: Linux ties the child to the thread that started it."""
    return subprocess.Popen(args, preexec_fn=_death_signal(), **popen)
