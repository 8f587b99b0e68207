"""A hostile agent for the adversarial suite: it speaks the mock shim's command line (so the
mock's shim config serves), reads its behaviour from the StepPack's ``context.hostile``, and
records every pid it creates in ``<round>/logs/hostile_pids.txt`` so a test can check,
afterwards, that none of them is left.

Behaviours that end with ``then_pass`` do their damage and then hand over to the mock shim
(same argv), which acts out the pack's ``mock_scenario`` (``pass`` unless set): so the step
completes with a truthful, passing StepResult and the runner must still undo the damage, and
the mock's own hostile scenarios (``fork_tree``) serve as they are.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn

PACK = json.loads(Path(os.environ["RUNNER_PACK_FILE"]).read_text(encoding="utf-8"))
BEHAVIOUR = str(PACK.get("context", {}).get("hostile", "pass"))
ROUND = Path(os.environ["RUNNER_ROUND_DIR"])
PIDS = ROUND / "logs" / "hostile_pids.txt"


def record() -> None:
    with PIDS.open("a", encoding="ascii") as f:
        f.write(f"{os.getpid()}\n")


def then_pass() -> NoReturn:
    """Become the mock shim's `pass` scenario (the pack's `mock_scenario` is unset)."""
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "runner.mock_shim", *sys.argv[1:]])


def sleep_forever() -> NoReturn:
    while True:
        time.sleep(60)


def daemon() -> NoReturn:
    """The classic daemon: fork, setsid, fork, the middle process exits, and the grandchild
    starts over with an empty environment (no RUNNER_STEP_TOKEN), keeping nothing that links it
    to the step. Then the step itself completes with a passing result."""
    middle = os.fork()
    if middle == 0:
        os.setsid()
        if os.fork() == 0:
            script = f"echo $$ >> {PIDS}; exec sleep 300"
            os.execve("/bin/sh", ["sh", "-c", script], {})
        os._exit(0)
    os.waitpid(middle, 0)
    deadline = time.monotonic() + 5
    while len(PIDS.read_text().split()) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # the daemon has written its pid: it exists before the step ends
    then_pass()


def close_stdout() -> NoReturn:
    print("closing stdout and stderr, staying alive", flush=True)
    os.close(1)
    os.close(2)
    sleep_forever()


def ignore_term() -> NoReturn:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        print('{"type": "heartbeat"}', flush=True)
        time.sleep(0.1)


def read_stdin() -> NoReturn:
    """Reads its stdin forever and says nothing (stdin is /dev/null: end of file, again)."""
    while True:
        sys.stdin.buffer.read(1)
        time.sleep(0.01)


def garbage() -> int:
    out = sys.stdout.buffer
    out.write(b'\xff\xfe not utf-8 \xc3\x28 {"verdict": "PA\xff\n{ broken: [1,\n')
    out.write(bytes(range(256)) + b"\n" + b"\xed\xa0\x80 lone surrogate, overlong \xc0\xaf\n")
    return 0


def fifo_result() -> int:
    """A FIFO where the StepResult file belongs: opening it for reading blocks forever."""
    os.mkfifo(os.environ["RUNNER_STEP_RESULT_FILE"])
    return 0


def fifo_stdout() -> int:
    """Replaces its own stdout evidence file with a FIFO (the runner reads the file back)."""
    path = ROUND / "shim_stdout.txt"
    path.unlink()
    os.mkfifo(path)
    return 0


def symlink_result() -> int:
    """The StepResult file is a link to a file outside the workspace."""
    os.symlink("/etc/passwd", os.environ["RUNNER_STEP_RESULT_FILE"])
    return 0


def eat_memory() -> NoReturn:
    hoard = []
    while True:
        hoard.append(bytearray(16 * 1024 * 1024))  # zero-filled: every page is touched
        time.sleep(0.02)


def edit_outside() -> NoReturn:
    """Edits a tracked file of the target checkout (the main worktree, outside its own), then
    does its own work truthfully."""
    listing = subprocess.run(
        ["git", "worktree", "list", "--porcelain"], capture_output=True, text=True, check=True
    ).stdout
    main = Path(listing.splitlines()[0].removeprefix("worktree "))
    with (main / "README.md").open("a", encoding="utf-8") as f:
        f.write("edited by an agent from outside its worktree\n")
    then_pass()


def artifacts_elsewhere() -> NoReturn:
    """Swaps the workspace's evidence directory (``.artifacts/agent_runs``) for a link to a
    directory outside it that holds a secret, hoping the runner copies the evidence back
    through the link."""
    outside = Path(str(PACK["context"]["outside_dir"]))
    runs = Path.cwd() / ".artifacts" / "agent_runs"
    for entry in runs.iterdir():
        entry.rename(outside / entry.name)  # the round goes on there
    runs.rmdir()
    runs.symlink_to(outside, target_is_directory=True)
    then_pass()


def flood_line() -> int:
    """`context.flood_mb` MiB on stdout without one newline, then a clean exit."""
    chunk = b"x" * (1024 * 1024)
    out = sys.stdout.buffer
    for _ in range(int(PACK["context"].get("flood_mb", 64))):
        out.write(chunk)
    out.flush()
    return 0


BEHAVIOURS = {
    "daemon": daemon,
    "close_stdout": close_stdout,
    "ignore_term": ignore_term,
    "read_stdin": read_stdin,
    "garbage": garbage,
    "fifo_result": fifo_result,
    "fifo_stdout": fifo_stdout,
    "symlink_result": symlink_result,
    "eat_memory": eat_memory,
    "edit_outside": edit_outside,
    "artifacts_elsewhere": artifacts_elsewhere,
    "flood_line": flood_line,
    "pass": then_pass,
}

if __name__ == "__main__":
    record()
    sys.exit(BEHAVIOURS[BEHAVIOUR]())
