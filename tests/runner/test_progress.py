from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kernel.errors import QueueInvalid
from protocol import LastSelected, ProtocolError, QueueTask, Scoreboard, TaskQueue, Trends, decode
from runner.progress import (
    Progress,
    QueueLocked,
    load_queue,
    queue_lock,
    save_queue,
    utc_now,
    write_all,
)

HOLD = """
import sys, time
from runner.log import configure_logging
from runner.progress import queue_lock
configure_logging("warning")
with queue_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold_lock(queue: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(queue), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_queue_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "progress" / "task_queue.json"
    queue = TaskQueue(
        tasks=[QueueTask(key="A", title="a"), QueueTask(key="B", title="b", depends_on=["A"])]
    )
    save_queue(path, queue)
    assert load_queue(path) == queue
    assert path.read_text().endswith("}\n")


def test_missing_queue(tmp_path: Path) -> None:
    assert load_queue(tmp_path / "q.json", missing_ok=True) == TaskQueue()
    with pytest.raises(ProtocolError, match="cannot read file"):
        load_queue(tmp_path / "q.json")


@pytest.mark.parametrize(
    ("content", "error", "words"),
    [
        ("{", ProtocolError, "not valid JSON"),
        ('{"tasks": [{"key": "A", "title": "a", "status": "x"}]}', ProtocolError, "status"),
        (
            json.dumps({"tasks": [{"key": "A", "title": "a", "depends_on": ["B"]},
                                  {"key": "B", "title": "b", "depends_on": ["A"]}]}),
            QueueInvalid,
            "dependency cycle: A -> B -> A",
        ),
    ],
)  # fmt: skip
def test_bad_queue_files_name_the_file(
    tmp_path: Path, content: str, error: type[Exception], words: str
) -> None:
    path = tmp_path / "q.json"
    path.write_text(content)
    with pytest.raises(error) as err:
        load_queue(path)
    assert words in str(err.value) and str(path) in str(err.value)


def test_a_held_lock_refuses_a_second_process(tmp_path: Path) -> None:
    queue = tmp_path / "q.json"
    holder = hold_lock(queue, 30)
    try:
        start = time.monotonic()
        with pytest.raises(QueueLocked) as err, queue_lock(queue, timeout=0.3):
            pass
        assert time.monotonic() - start >= 0.3
        assert err.value.holder == str(holder.pid)
        assert f"locked by process {holder.pid}" in str(err.value)
    finally:
        holder.kill()
        holder.wait()


def test_a_dead_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    queue = tmp_path / "q.json"
    holder = hold_lock(queue, 30)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with queue_lock(queue, timeout=2):
        pass


def test_waiting_for_the_lock_succeeds_when_released(tmp_path: Path) -> None:
    queue = tmp_path / "q.json"
    holder = hold_lock(queue, 0.5)
    try:
        start = time.monotonic()
        with queue_lock(queue, timeout=10):
            waited = time.monotonic() - start
        assert waited > 0.2  # it waited for the holder instead of going ahead
    finally:
        holder.wait()


def test_concurrent_adds_lose_nothing(tmp_path: Path) -> None:
    queue = tmp_path / "q.json"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "runner", "queue", "add", f"T{i}", "--queue-path", str(queue),
             "--title", f"task {i}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for i in range(6)
    ]  # fmt: skip
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    assert sorted(t.key for t in load_queue(queue).tasks) == [f"T{i}" for i in range(6)]


def test_progress_files(tmp_path: Path) -> None:
    progress = Progress(tmp_path / "progress")
    assert progress.load_scoreboard() == Scoreboard()
    assert progress.load_trends() == Trends()
    assert progress.load_boundary() is None and progress.load_plan() is None
    queue = TaskQueue(tasks=[QueueTask(key="A", title="a")])
    now = utc_now()
    files = progress.updated(queue, now=now, selected=LastSelected(key="A", run_id="R", at=now))
    assert list(files) == [progress.scoreboard, progress.trends, progress.summary]
    write_all(files)
    board = decode(progress.scoreboard.read_bytes(), Scoreboard)
    assert board.last_selected is not None and board.last_selected.key == "A"
    again = progress.updated(queue, now=utc_now())
    trends = decode(again[progress.trends], Trends)
    assert [p.selected for p in trends.points] == ["A", None]
    assert decode(again[progress.scoreboard], Scoreboard).last_selected == board.last_selected


def test_utc_now_is_rfc3339() -> None:
    assert len(utc_now()) == 20 and utc_now().endswith("Z")
