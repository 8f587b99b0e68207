"""Hostile child processes for the supervisor tests, and the psutil checks that they are gone.

Each script is plain Python run with ``sys.executable -c``; scripts that spawn more processes
append every pid they create to the file named by their first argument, so a test can check
afterwards, with psutil, that none of them survived and none is left a zombie.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import psutil

PY = sys.executable

RECORD = """
import os, sys, time, signal
PIDS = sys.argv[1]
def record():
    with open(PIDS, "a") as f:
        f.write(f"{os.getpid()}\\n")
record()
"""

# A tree: a child and grandchild in the step's group, a grandchild that escapes with setsid
# while its parent exits at once (it is then nobody's descendant), and ignores SIGTERM, and an
# unreaped zombie child.
FORK_TREE = (
    RECORD
    + """
if os.fork() == 0:
    record()
    if os.fork() == 0:
        record(); time.sleep(60); os._exit(0)
    time.sleep(60); os._exit(0)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        record(); time.sleep(60); os._exit(0)
    os._exit(0)
if os.fork() == 0:
    os._exit(0)
print("ready", flush=True)
EXIT_NOW = len(sys.argv) > 2 and sys.argv[2] == "exit"
if not EXIT_NOW:
    time.sleep(60)
"""
)

IGNORE_TERM = (
    RECORD
    + """
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""
)

CLOSE_STDOUT_AND_STAY = (
    RECORD
    + """
print("bye", flush=True)
os.close(1); os.close(2)
time.sleep(60)
"""
)

READ_STDIN_FOREVER = (
    RECORD
    + """
data = sys.stdin.buffer.read()
print(f"stdin={len(data)}", flush=True)
time.sleep(60)
"""
)


def write_script(tmp: Path, name: str, body: str) -> Path:
    path = tmp / f"{name}.py"
    path.write_text(body, encoding="utf-8")
    return path


def recorded_pids(path: Path, *, expect: int = 1, timeout: float = 5.0) -> list[int]:
    """The pids a script recorded (waiting briefly for at least `expect` of them)."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        pids = [int(x) for x in text.split()]
        if len(pids) >= expect or time.monotonic() > deadline:
            return pids


def survivors(pids: list[int], since: float) -> list[str]:
    """Processes among `pids` that still exist (a zombie counts), described for a message.

    A pid that now names a process created after `since` (wall clock, when the step ended) was
    reused: it is not a survivor. psutil's create_time is only good to about a second.
    """
    found: list[str] = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            status, created = proc.status(), proc.create_time()
        except psutil.NoSuchProcess:
            continue
        if created > since + 1.0:
            continue
        found.append(f"{pid} ({status})")
    return found


def own_zombies() -> list[int]:
    return [c.pid for c in psutil.Process().children() if _status(c) == psutil.STATUS_ZOMBIE]


def _status(proc: psutil.Process) -> str:
    try:
        return str(proc.status())
    except psutil.NoSuchProcess:
        return "gone"
