"""The process-tree tracker on its own: pid ranges, /proc parsing, threads, tokens."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from runner import _proctree
from runner._proctree import ProcessTree, new_pids, read_stat
from tests.runner.hostile import PY


@pytest.fixture
def trees() -> Iterator[list[ProcessTree]]:
    """Trees made by a test, released afterwards (they register with a process-wide scanner)."""
    made: list[ProcessTree] = []
    yield made
    for tree in made:
        tree.release()


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
        proc.wait()


def start(procs: list[subprocess.Popen[bytes]], code: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    proc = subprocess.Popen(
        [PY, "-c", code], start_new_session=True, stdout=subprocess.PIPE, env=env
    )
    procs.append(proc)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    return proc


def test_stat_parses_a_command_name_with_parentheses(
    spawned: list[subprocess.Popen[bytes]],
) -> None:
    code = (
        "import time\n"
        "open('/proc/self/comm', 'w').write('x) S 1 1 1 (')\n"
        "print('ready', flush=True); time.sleep(30)\n"
    )
    proc = start(spawned, code)
    stat = read_stat(proc.pid)
    assert stat is not None
    assert (stat.ppid, stat.pgrp, stat.session) == (os.getpid(), proc.pid, proc.pid)
    assert stat.state in ("S", "R")


def test_threads_are_not_members(
    spawned: list[subprocess.Popen[bytes]], trees: list[ProcessTree]
) -> None:
    since = _proctree.last_pid()
    code = (
        "import threading, time\n"
        "for _ in range(4):\n"
        "    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
        "print('ready', flush=True); time.sleep(30)\n"
    )
    proc = start(spawned, code)
    tree = ProcessTree(proc.pid, token="t", since_pid=since)
    trees.append(tree)
    tree.refresh()
    tids = {int(t) for t in os.listdir(f"/proc/{proc.pid}/task")}
    assert len(tids) == 5
    assert set(tree.members) == {proc.pid}
    assert tree.running() == [proc.pid]


def test_orphan_carrying_the_token_is_claimed(
    spawned: list[subprocess.Popen[bytes]], trees: list[ProcessTree]
) -> None:
    _proctree.become_subreaper()
    since = _proctree.last_pid()
    code = (
        "import os, sys, time\n"
        "r, w = os.pipe()\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        os.write(w, str(os.getpid()).encode()); time.sleep(30); os._exit(0)\n"
        "    os._exit(0)\n"
        "os.waitpid(child, 0)  # the intermediate is gone: no parent, group or session links\n"
        "print(os.read(r, 20).decode(), flush=True)\n"
        "time.sleep(30)\n"
    )
    proc = subprocess.Popen(
        [PY, "-c", code],
        start_new_session=True,
        stdout=subprocess.PIPE,
        env={**os.environ, _proctree.TOKEN_ENV: "abc123"},
    )
    spawned.append(proc)
    assert proc.stdout is not None
    escapee = int(proc.stdout.readline())
    time.sleep(0.1)  # the intermediate has exited: the escapee is our child now
    stat = read_stat(escapee)
    assert stat is not None and stat.ppid == os.getpid()
    other = ProcessTree(proc.pid, token="another", since_pid=since)
    other.refresh()
    other.release()
    assert escapee not in other.members, "no parent, group or session links it to the step"
    tree = ProcessTree(proc.pid, token="abc123", since_pid=since)
    trees.append(tree)
    tree.refresh()
    assert escapee in tree.members, "its token does"
    os.kill(escapee, 9)
    deadline = time.monotonic() + 5
    while read_stat(escapee) is not None and time.monotonic() < deadline:
        tree.settle()
        time.sleep(0.01)
    assert read_stat(escapee) is None, "settle() reaps a killed member that is our zombie"


def test_new_pid_ranges_wrap_and_fall_back_to_listing() -> None:
    assert new_pids(990, 5, 1000) == [*range(991, 1000), *range(1, 6)]
    assert new_pids(990, 990, 1000) == []
    listed = new_pids(1, _proctree.pid_max() - 1, _proctree.pid_max())
    assert os.getpid() in listed
    assert len(listed) < 5000, "a huge range lists /proc instead of probing every pid"
