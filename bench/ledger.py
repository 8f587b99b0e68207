"""Ledger benchmarks: durable and buffered append throughput against a naive writer, verify
throughput, open time of a 1,000,000-event ledger, and verify's peak memory against size.

Every figure comes from this run; the naive writer is measured in the same run:

    .venv/bin/python bench/ledger.py [--seconds 3] [--repeat 3] [--verify-events 100000]
                                     [--open-events 1000000] [--dir DIR] [--only PARTS]

Events are about 1 KiB: a task event's line (an `attempt` with 322 characters of code) is
1,030 bytes, plus its 130-byte entry in a `task_events` line of the project chain; a project
event's line (`execution_started`) 1,040 bytes. `--scale 2.3` makes them the 1.5 KB lines of
earlier runs (docs/performance.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

# This file is named like the package it measures: keep its own directory off the import path.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import anyio
import msgspec
import structlog

from ledger import ProjectPaths, open_ledger, task_pool, verify_project
from ledger.envelopes import ProjectLine, TaskLine
from protocol import Verdict
from protocol.ledger_events import Attempt, ExecutionStarted

UNIT = "def handler(request):\n    return {'ok': True}\n"  # 46 characters
CODE = UNIT * 7  # task lines of 1,030 bytes
DETAIL = UNIT * 15  # project lines of 1,040 bytes


def scale(factor: float) -> None:
    global CODE, DETAIL
    CODE = UNIT * round(7 * factor)
    DETAIL = UNIT * round(15 * factor)


def attempt_body(s: int) -> Attempt:
    return Attempt(
        r=0, s=s, result=Verdict.FAIL, reason_code="TESTS_FAILED", code_content=CODE,
        acceptance_snapshot=["AC-1: the tests pass"], executed_files=["src/api.py"],
        executed_commands=["python -m pytest -q"], test_results="1 failed, 11 passed",
    )  # fmt: skip


def line_sizes() -> tuple[int, int]:
    """(task line, project line) in bytes, as the writer writes them."""
    base = Path(tempfile.mkdtemp(prefix="ledger-size-"))

    async def one() -> None:
        async with open_ledger(base, "size", create=True, mode="buffered") as ledger:
            await ledger.append_task_event("T-0", attempt_body(0))
            await ledger.append_project_event(ExecutionStarted(detail=DETAIL))
            await ledger.flush()

    try:
        anyio.run(one)
        paths = ProjectPaths.of(base, "size")
        task = len(paths.task_events("T-0").read_bytes())
        return task, len(paths.events.read_bytes().splitlines()[-1]) + 1
    finally:
        shutil.rmtree(base)


# --- appends ----------------------------------------------------------------------------------


class Run(NamedTuple):
    events: int
    elapsed: float
    loop_cpu: float  # the event loop's thread, while the producers ran
    process_cpu: float  # the ledger's commit process, from its start to its end


def run_producers(root: Path, mode: str, producers: int, seconds: float, shared_task: bool) -> Run:
    """`producers` tasks append for `seconds`; each to its own task, or all to the project
    chain (`shared_task`)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    count, elapsed, loop_cpu = anyio.run(_produce, root, mode, producers, seconds, shared_task)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the commit process was reaped
    process_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return Run(count, elapsed, loop_cpu, process_cpu)


async def _produce(
    root: Path, mode: str, producers: int, seconds: float, shared_task: bool
) -> tuple[int, float, float]:
    count = 0
    async with open_ledger(root, "bench", create=True, mode=mode) as ledger:  # type: ignore[arg-type]
        deadline = time.perf_counter() + seconds

        async def producer(n: int) -> None:
            nonlocal count
            task = f"T-{n}"
            pointer = ledger.task_state(task).pointer
            s = 0 if pointer is None else pointer.s + 1
            while time.perf_counter() < deadline:
                if shared_task:
                    await ledger.append_project_event(ExecutionStarted(detail=DETAIL))
                else:
                    await ledger.append_task_event(task, attempt_body(s))
                    s += 1
                count += 1

        start, cpu = time.perf_counter(), time.thread_time()
        async with anyio.create_task_group() as tg:
            for n in range(producers):
                tg.start_soon(producer, n)
        elapsed, cpu = time.perf_counter() - start, time.thread_time() - cpu
    return count, elapsed, cpu


def naive_writer(path: Path, seconds: float) -> tuple[int, float]:
    """The straightforward durable writer: per event, read the previous hash back from the
    file, hash sorted json.dumps, open/append/fsync/close."""
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    body = json.loads(json.dumps({"type": "attempt", "r": 0, "s": 0, "code_content": CODE,
                                  "result": "FAIL", "reason_code": "TESTS_FAILED"}))  # fmt: skip
    while time.perf_counter() < deadline:
        prev, seq = "0" * 64, 0
        if path.exists():
            with path.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
                last = json.loads(f.read().splitlines()[-1])
                prev, seq = last["event_hash"], last["seq"] + 1
        event = {"seq": seq, "prev_event_hash": prev, "body": {**body, "s": seq}}
        canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        event["event_hash"] = hashlib.sha256(canonical.encode()).hexdigest()
        line = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        with path.open("ab") as f:
            f.write(line.encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        count += 1
    return count, time.perf_counter() - start


def _spread(values: list[float]) -> str:
    """median [min-max], for figures measured several times."""
    if len(values) == 1:
        return f"{values[0]:,.0f}"
    return f"{statistics.median(values):,.0f} [{min(values):,.0f}-{max(values):,.0f}]"


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def bench_appends(base: Path, seconds: float, repeat: int) -> None:
    task_line, project_line = line_sizes()
    print(f"\n== append throughput (task lines {task_line:,} B, project lines {project_line:,} B; "
          f"{seconds:g} s each, {repeat} run(s) per row: median [min-max]) ==")  # fmt: skip
    print("The disk's fsync latency drifts within minutes here, so the naive writer is measured")
    print("again right before each durable run and each ratio is to that measurement. CPU per")
    print("event: the event loop's thread, and the ledger's commit process (medians).")
    print(_load())
    rows = [("durable", p, False) for p in (1, 8, 64)] + [
        ("durable", 64, True), ("durable", 256, False), ("buffered", 64, False),
        ("buffered", 64, True),
    ]  # fmt: skip
    naive = 0.0
    for number, (mode, producers, shared) in enumerate(rows):
        rates, naives, ratios, loop, process = [], [], [], [], []
        for run in range(repeat):
            if mode == "durable" or not naives:
                naive_path = base / f"naive-{number}-{run}.jsonl"
                n, dt = naive_writer(naive_path, seconds / 2)
                naive = n / dt
                naive_path.unlink()
            root = base / f"{mode}-{producers}-{shared}-{run}"
            got = run_producers(root, mode, producers, seconds, shared)
            shutil.rmtree(root)
            rate = got.events / got.elapsed
            rates.append(rate)
            naives.append(naive)
            ratios.append(rate / naive)
            loop.append(got.loop_cpu / got.events * 1e6)
            process.append(got.process_cpu / got.events * 1e6)
        what = "project chain" if shared else "own task each"
        ratio = statistics.median(ratios)
        cpu = f"{statistics.median(loop):.1f} + {statistics.median(process):.1f} us"
        print(f"{mode:8} {producers:>3} producers, {what:14} {_spread(rates):>26} events/s"
              f"   naive {_spread(naives):>20}/s   {ratio:>5.1f}x"
              f" [{min(ratios):.1f}-{max(ratios):.1f}]   CPU/event {cpu}")  # fmt: skip
    print(_load())


# --- verify and open --------------------------------------------------------------------------


async def fill_project(root: Path, project: str, events: int) -> None:
    """`events` project events of about 1 KiB each, from 64 producers (buffered)."""
    async with open_ledger(root, project, create=True, mode="buffered") as ledger:

        async def producer() -> None:
            for _ in range(events // 64):
                await ledger.append_project_event(ExecutionStarted(detail=DETAIL))

        async with anyio.create_task_group() as tg:
            for _ in range(64):
                tg.start_soon(producer)


async def fill(root: Path, project: str, events: int, tasks: int, small: bool) -> None:
    """Write `events` task events over `tasks` tasks through the real writer (buffered): the
    bench's attempts, or `small` ones (about 360-byte lines)."""
    async with open_ledger(root, project, create=True, mode="buffered") as ledger:
        per_task = events // tasks

        async def producer(n: int) -> None:
            for s in range(per_task):
                body = (
                    Attempt(r=0, s=s, result=Verdict.FAIL, reason_code="X", code_content="x = 1")
                    if small
                    else attempt_body(s)
                )
                await ledger.append_task_event(f"T-{n}", body)

        async with anyio.create_task_group() as tg:
            for n in range(tasks):
                tg.start_soon(producer, n)


def bench_verify(base: Path, events: int) -> None:
    task_line, _ = line_sizes()
    print(f"\n== verify ({events:,} task events, lines of {task_line:,} B, 64 tasks) ==")
    t = time.perf_counter()
    anyio.run(fill, base, "verify", events, 64, False)
    print(f"written in {time.perf_counter() - t:.1f} s (buffered writer)")
    _verify_rate(ProjectPaths.of(base, "verify"), events)
    # Every line a ~1 KiB event, no task rules: the project chain alone.
    t = time.perf_counter()
    anyio.run(fill_project, base, "verify-project", events)
    print(f"\n{events:,} project events of ~1 KiB written in {time.perf_counter() - t:.1f} s")
    _verify_rate(ProjectPaths.of(base, "verify-project"), 0)


def _verify_rate(paths: ProjectPaths, task_events: int) -> None:
    print(_load())
    size = sum(p.stat().st_size for p in paths.dir.rglob("*.jsonl"))
    times, walls, parallel = [], [], []
    jobs = task_pool.available_cpus()
    for _ in range(5):
        start, wall = time.process_time(), time.perf_counter()
        report = verify_project(paths)
        times.append(time.process_time() - start)
        walls.append(time.perf_counter() - wall)
        if jobs > 1 and task_events:  # alternating, so that both see the same machine
            # The workers whatever the size (verify_project starts them from PARALLEL_BYTES).
            threshold, task_pool.PARALLEL_BYTES = task_pool.PARALLEL_BYTES, 0
            wall = time.perf_counter()
            shared = verify_project(paths, jobs=jobs)
            parallel.append(time.perf_counter() - wall)
            task_pool.PARALLEL_BYTES = threshold
            assert shared == report, "the workers' report differs"
    assert report.ok, report.problems
    lines = report.events
    rates = [lines / t for t in times]
    print(f"verified {lines:,} lines ({size / 1e6:.0f} MB) 5 times, CPU time of one core each")
    print(f"verify: {_spread(rates)} lines/s, {size / min(times) / 1e6:.0f} MB/s at best")
    if task_events:
        print(f"        {_spread([task_events / t for t in times])} task events/s "
              "(each with its entry in a task_events line)")  # fmt: skip
    if parallel:
        # Wall time, start of the worker processes included, against one process's wall time.
        speedup = statistics.median(walls) / statistics.median(parallel)
        print(f"verify --jobs {jobs}: {_spread([task_events / t for t in parallel])} task "
              f"events/s wall clock, {speedup:.2f}x one process's wall clock "
              f"({_spread([task_events / t for t in walls])}/s; workers used from "
              f"{task_pool.PARALLEL_BYTES >> 20} MiB of task chains, here forced)")  # fmt: skip
    # The work no check of these lines can skip, in bulk (no Python per line): strict decode,
    # canonical encode, SHA-256 of each line.
    files = [(paths.events, ProjectLine)] + [
        (f, TaskLine) for f in sorted(paths.tasks.glob("*/events.jsonl"))
    ]
    work = [(msgspec.json.Decoder(type_).decode_lines, f.read_bytes()) for f, type_ in files]
    encode = msgspec.json.Encoder(order="sorted").encode
    floor = float("inf")
    for _ in range(3):
        start = time.process_time()
        for decode_lines, data in work:
            for _ in map(hashlib.sha256, map(encode, decode_lines(data))):
                pass
        floor = min(floor, time.process_time() - start)
    print(
        f"decode + encode + sha256 alone, in bulk: {lines / floor:,.0f} lines/s "
        f"(verify reaches {lines / min(times) / (lines / floor):.0%} of that)"
    )
    print(_load())


def bench_open(base: Path, events: int) -> Path:
    print(f"\n== open ({events:,} task events over 1,000 tasks, and their links) ==")
    t = time.perf_counter()
    anyio.run(fill, base, "big", events, 1000, True)
    print(f"written in {time.perf_counter() - t:.1f} s (buffered writer)")
    paths = ProjectPaths.of(base, "big")
    lines = sum(1 for _ in paths.events.open("rb"))
    times, with_task = [], []

    async def one_open() -> None:
        start = time.perf_counter()
        async with open_ledger(base, "big", mode="buffered") as ledger:
            opened = time.perf_counter()
            ledger.task_state("T-500")
            first_task = time.perf_counter()
            times.append(opened - start)
            with_task.append(first_task - start)
            _ = ledger.head

    for _ in range(7):
        anyio.run(one_open)
    total = lines + events
    print(f"ledger: {total:,} events ({lines:,} in the project chain)")
    print(
        f"open (lock, project tail, journal, writer started): median "
        f"{statistics.median(times) * 1e3:.1f} ms, max {max(times) * 1e3:.1f} ms"
    )
    print(f"open + first task's state: median {statistics.median(with_task) * 1e3:.1f} ms")
    return paths.dir


def verify_peak_rss(root: Path, project: str) -> tuple[int, int]:
    """(lines verified, peak RSS in KiB) of verify in a fresh process."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork + exec.
    code = (
        "import re, sys\n"
        "from ledger import ProjectPaths, verify_project\n"
        "r = verify_project(ProjectPaths.of(sys.argv[1], sys.argv[2]))\n"
        "assert r.ok, r.problems\n"
        "hwm = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read())[1]\n"
        "print(r.events, hwm)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(root), project], check=True,
                         capture_output=True, text=True).stdout.split()  # fmt: skip
    return int(out[0]), int(out[1])


def bench_memory(base: Path) -> None:
    print("\n== verify peak memory (fresh process each, same event shape) ==")
    for events in (10_000, 100_000):
        anyio.run(fill, base, f"mem-{events}", events, 1000, True)
    for project in ("mem-10000", "mem-100000", "big"):
        if (base / project).exists():
            lines, rss = verify_peak_rss(base, project)
            print(f"{lines:>10,} events: peak RSS {rss / 1024:.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3, help="runs per append row")
    parser.add_argument("--verify-events", type=int, default=100_000)
    parser.add_argument("--open-events", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=None, help="where to build (default: tmp)")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="event size factor (2.3: earlier 1.5 KB lines)"
    )
    parser.add_argument(
        "--only", default="appends,verify,open,memory", help="comma-separated parts to run"
    )
    args = parser.parse_args()
    scale(args.scale)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    base = Path(tempfile.mkdtemp(prefix="ledger-bench-", dir=args.dir))
    try:
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, in {base}")
        parts = set(args.only.split(","))
        if "appends" in parts:
            bench_appends(base, args.seconds, args.repeat)
        if "verify" in parts:
            bench_verify(base, args.verify_events)
        if "open" in parts and args.open_events:
            bench_open(base, args.open_events)
        if "memory" in parts:
            bench_memory(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
