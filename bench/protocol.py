"""StepResult decode throughput: msgspec Structs against json.loads plus hand validation.

Both sides do the same work on the same payload in the same run: parse the JSON and check every
field's type and closed set, raising on the first problem. Prints documents per second for each
and their ratio.

    .venv/bin/python bench/protocol.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# This file is named like the package it measures: keep its own directory off the import path.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

from protocol import StepResult, decode

VERDICTS = {"PASS", "FAIL", "REWORK", "BLOCKED"}
REASON = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
SAFE_ID = re.compile(r"^(?!.*\.\.)(?!.*\n)[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def payload(n_commands: int = 8, n_acs: int = 7) -> bytes:
    prefix = ".artifacts/agent_runs/T-1_run/steps/S1/rounds/R1"
    doc = {
        "verdict": "PASS",
        "reason_code": "PASS_ALL_CRITERIA",
        "task_id": "T-1",
        "run_id": "T-1_run",
        "step_id": "S1",
        "files_changed": [f"src/module_{i}.py" for i in range(6)],
        "commands_executed": [
            {
                "command": f"python -m pytest tests/test_{i}.py -q",
                "exit_code": 0,
                "evidence_path": f"{prefix}/outputs/cmd_{i}.stdout.txt",
                "duration_ms": 1200,
            }
            for i in range(n_commands)
        ],
        "verification_results": [
            {
                "ac": f"AC{i}: the thing number {i} works as described",
                "met": True,
                "evidence_path": f"{prefix}/outputs/cmd_{i}.stdout.txt",
            }
            for i in range(1, n_acs + 1)
        ],
        "evidence_map": {f"AC{i}": [f"{prefix}/outputs/cmd_{i}.stdout.txt"] for i in range(1, 8)},
        "summary": "Implemented the change and verified every criterion.",
        "thread_id": "thread_abc123",
        "usage": {"input_tokens": 12000, "output_tokens": 3400, "cost_usd": 0.42},
    }
    return json.dumps(doc).encode()


def _require(obj: dict[str, Any], key: str, types: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise ValueError(f"{where}: missing {key}")
    value = obj[key]
    if not isinstance(value, types) or (isinstance(value, bool) and types is int):
        raise ValueError(f"{where}.{key}: wrong type")
    return value


def _optional(obj: dict[str, Any], key: str, types: type | tuple[type, ...], where: str) -> Any:
    if obj.get(key) is None:
        return None
    return _require(obj, key, types, where)


def hand_decode(raw: bytes) -> dict[str, Any]:
    """json.loads plus the same checks the Struct declares, written by hand."""
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError("$: not an object")
    allowed = {"verdict", "reason_code", "task_id", "run_id", "step_id", "files_changed",
               "commands_executed", "verification_results", "evidence_map", "summary",
               "thread_id", "usage", "blockers", "metadata"}  # fmt: skip
    unknown = set(doc) - allowed
    if unknown:
        raise ValueError(f"$: unknown fields {unknown}")
    if _require(doc, "verdict", str, "$") not in VERDICTS:
        raise ValueError("$.verdict: not a verdict")
    if not REASON.match(_require(doc, "reason_code", str, "$")):
        raise ValueError("$.reason_code: bad")
    for key in ("task_id", "run_id", "step_id"):
        value = _optional(doc, key, str, "$")
        if value is not None and not SAFE_ID.match(value):
            raise ValueError(f"$.{key}: unsafe")
    for i, f in enumerate(doc.get("files_changed", [])):
        if not isinstance(f, str):
            raise ValueError(f"$.files_changed[{i}]")
    for i, rec in enumerate(_optional(doc, "commands_executed", list, "$") or []):
        where = f"$.commands_executed[{i}]"
        if not isinstance(rec, dict) or set(rec) - {"command", "exit_code", "evidence_path",
                                                     "duration_ms"}:  # fmt: skip
            raise ValueError(where)
        _require(rec, "command", str, where)
        _require(rec, "exit_code", int, where)
        _require(rec, "evidence_path", str, where)
        d = _optional(rec, "duration_ms", int, where)
        if d is not None and d < 0:
            raise ValueError(where)
    for i, rec in enumerate(_optional(doc, "verification_results", list, "$") or []):
        where = f"$.verification_results[{i}]"
        if not isinstance(rec, dict) or set(rec) - {"ac", "met", "evidence_path", "notes"}:
            raise ValueError(where)
        _require(rec, "ac", str, where)
        _require(rec, "met", bool, where)
        _require(rec, "evidence_path", str, where)
    for key, paths in (_optional(doc, "evidence_map", dict, "$") or {}).items():
        if not isinstance(key, str) or not isinstance(paths, list):
            raise ValueError("$.evidence_map")
        for p in paths:
            if not isinstance(p, str):
                raise ValueError(f"$.evidence_map.{key}")
    _optional(doc, "summary", str, "$")
    _optional(doc, "thread_id", str, "$")
    usage = _optional(doc, "usage", dict, "$")
    if usage is not None:
        for key in ("input_tokens", "output_tokens"):
            v = _optional(usage, key, int, "$.usage")
            if v is not None and v < 0:
                raise ValueError(f"$.usage.{key}")
        c = _optional(usage, "cost_usd", (int, float), "$.usage")
        if c is not None and c < 0:
            raise ValueError("$.usage.cost_usd")
    return doc


def rate(fn: Callable[[bytes], object], raw: bytes, seconds: float) -> float:
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(200):
            fn(raw)
        n += 200
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    raw = payload()
    assert hand_decode(raw)["verdict"] == decode(raw, StepResult).verdict
    baseline = rate(hand_decode, raw, args.seconds)
    ours = rate(lambda r: decode(r, StepResult), raw, args.seconds)
    print(f"payload: {len(raw)} bytes (StepResult, 8 commands, 7 ACs)")
    print(f"json.loads + hand validation: {baseline:12,.0f} docs/s")
    print(f"msgspec StepResult:           {ours:12,.0f} docs/s")
    print(f"ratio msgspec / baseline:     {ours / baseline:12.1f}x")


if __name__ == "__main__":
    main()
