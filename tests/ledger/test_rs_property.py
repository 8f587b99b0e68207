"""The R/S rules through the ledger agree with a reference model, whatever the sequence."""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import AttemptOrderRejected, TaskAlreadyClosed
from ledger.store import ProjectPaths
from ledger.verify import verify_project
from ledger.writer import open_ledger
from protocol.ledger_events import FinalStatus, TaskClosed
from tests.ledger.conftest import PROJECT, attempt

Op = tuple[str, int, int]


class Model:
    """The rules as the original README states them, written independently of protocol."""

    def __init__(self) -> None:
        self.last: tuple[int, int] | None = None
        self.closed = False

    def apply(self, op: Op) -> str:
        if self.closed:
            return "closed"
        kind, r, s = op
        if kind == "close":
            self.closed = True
            return "ok"
        if self.last is None:
            legal = (r, s) == (0, 0)
        else:
            lr, ls = self.last
            legal = (r, s) in {(lr, ls + 1), (lr + 1, 0)}
        if not legal:
            return "order"
        self.last = (r, s)
        return "ok"


ops = st.lists(
    st.one_of(
        st.tuples(st.just("attempt"), st.integers(0, 3), st.integers(0, 3)),
        st.tuples(st.just("close"), st.just(0), st.just(0)),
    ),
    max_size=25,
)


async def through_ledger(root: Path, sequence: list[Op]) -> list[str]:
    outcomes = []
    async with open_ledger(root, PROJECT, create=True, mode="buffered") as ledger:
        for kind, r, s in sequence:
            body = attempt(r, s) if kind == "attempt" else TaskClosed(FinalStatus.ACCEPTED)
            try:
                await ledger.append_task_event("T", body)
                outcomes.append("ok")
            except AttemptOrderRejected:
                outcomes.append("order")
            except TaskAlreadyClosed:
                outcomes.append("closed")
    return outcomes


@settings(max_examples=60, deadline=None)
@given(ops)
def test_ledger_accepts_exactly_what_the_model_accepts(sequence: list[Op]) -> None:
    model = Model()
    expected = [model.apply(op) for op in sequence]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        assert anyio.run(through_ledger, root, sequence) == expected
        report = verify_project(ProjectPaths.of(root, PROJECT))
        assert report.ok, report.problems
        accepted = expected.count("ok")
        head = report.task_heads.get("T")
        assert (head.seq + 1 if head else 0) == accepted
