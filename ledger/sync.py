"""`WorkflowLogger`: the original's blocking API, over the same async core.

Each call opens the project (taking its lock), does its work through the one async writer, and
closes it again, via `anyio.run`; so a call from a script, a REPL or another process behaves
exactly like the CLI. Code that is already async uses `open_ledger` directly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import anyio

from protocol import is_safe_id
from protocol.ledger_events import Attempt, AttemptUsage, FinalStatus, ProjectRecord, TaskClosed

from .archive import Imported, export_project, import_project
from .chain import ChainReader
from .errors import ChainBroken, LedgerError
from .render import render_task_log, write_task_log
from .store import ProjectPaths, read_manifest
from .verify import Head, VerifyReport, read_head, verify_project
from .writer import Appended, Ledger, Mode, check_task_event, init_project, open_ledger

T = TypeVar("T")


class WorkflowLogger:
    """Append-only workflow log of one project under `root_dir`.

    `create`: appends create the project when it does not exist (as the original did); the CLI
    passes False so that a mistyped project id is an error, not a new project.
    """

    def __init__(
        self,
        root_dir: str | Path,
        project_id: str,
        *,
        mode: Mode = "durable",
        lock_timeout: float = 0.0,
        create: bool = True,
    ) -> None:
        self.paths = ProjectPaths.of(root_dir, project_id)
        self.mode: Mode = mode
        self.lock_timeout = lock_timeout
        self.create = create

    def _run(self, work: Callable[[Ledger], Awaitable[T]]) -> T:
        async def main() -> T:
            async with open_ledger(
                self.paths.root,
                self.paths.project_id,
                mode=self.mode,
                lock_timeout=self.lock_timeout,
                create=self.create,
            ) as ledger:
                return await work(ledger)

        return anyio.run(main)

    def init(self) -> Head:
        """Create the project; `LedgerExists` if it is already there."""
        init_project(self.paths.root, self.paths.project_id)
        return self.head()

    def log_attempt(
        self,
        task_id: str,
        r: int,
        s: int,
        *,
        result: str,
        reason_code: str,
        acceptance_snapshot: Sequence[str] = (),
        code_change_summary: str = "",
        code_artifact_ref: str | None = None,
        code_content: str = "",
        executed_files: Sequence[str] = (),
        executed_commands: Sequence[str] = (),
        test_results: str = "",
        reason_detail: str = "",
        next_action: str = "",
        usage: AttemptUsage | None = None,
    ) -> Appended:
        """Record attempt R<r>/S<s> of `task_id`, enforcing the R/S rules."""
        body = Attempt(
            r=r,
            s=s,
            result=result,  # type: ignore[arg-type]  # validated by the writer
            reason_code=reason_code,
            acceptance_snapshot=list(acceptance_snapshot),
            code_change_summary=code_change_summary,
            code_artifact_ref=code_artifact_ref,
            code_content=code_content,
            executed_files=list(executed_files),
            executed_commands=list(executed_commands),
            test_results=test_results,
            reason_detail=reason_detail,
            next_action=next_action,
            usage=usage,
        )
        return self._append(task_id, body)

    def _append(self, task_id: str, body: Attempt | TaskClosed) -> Appended:
        """Check the id and the event before the ledger is opened (opening writes: the lock,
        the journal, recovery), so that bad input writes nothing."""
        check_task_event(task_id, body)
        return self._run(lambda ledger: ledger.append_task_event(task_id, body))

    def close_task(self, task_id: str, final_status: str, summary: str = "") -> Appended:
        """Write the task's final record (the ledger then writes its task_log.md)."""
        try:
            status = FinalStatus(final_status)
        except ValueError:
            allowed = ", ".join(s.value for s in FinalStatus)
            raise LedgerError(f"invalid final status {final_status!r}: one of {allowed}") from None
        body = TaskClosed(final_status=status, summary=summary)
        return self._append(task_id, body)

    def verify(
        self,
        expect_heads: Sequence[Head] = (),
        *,
        task_ids: Sequence[str] | None = None,
        jobs: int = 1,
    ) -> VerifyReport:
        """Verify the project (or only `task_ids`, against the project chain's links to them;
        a task with no events is an error, not a clean report)."""
        if task_ids is not None:
            read_manifest(self.paths)  # no ledger: say so first
            for task_id in task_ids:
                self._has_events(task_id)
        return verify_project(
            self.paths,
            expect_heads=tuple(expect_heads),
            task_ids=None if task_ids is None else tuple(task_ids),
            jobs=jobs,
        )

    def verify_task_chain(self, task_id: str) -> VerifyReport:
        """Verify one task's chain and its links; raise `ChainBroken` on the first problem."""
        self._has_events(task_id)
        report = verify_project(self.paths, task_ids=(task_id,))
        if report.problems:
            p = report.problems[0]
            raise ChainBroken(p.path, p.line, p.reason, p.expected, p.found)
        return report

    def head(self) -> Head:
        """The project chain's head (read from its last line; no lock needed)."""
        return _tail_head(self.paths)

    def task_log(self, task_id: str) -> str:
        read_manifest(self.paths)
        self._has_events(task_id)
        return render_task_log(self.paths, task_id)

    def write_task_logs(
        self, task_id: str | None = None
    ) -> Iterator[tuple[str, ChainBroken | None]]:
        """Rewrite `task_log.md` from the chain, of one task or of every task, yielding each
        task as it is done, with the damage that kept its log from being written if any (the
        other tasks are still rendered). The writer renders a task's log when it closes the
        task: this renders any task at any time (still open, or after a crash)."""
        read_manifest(self.paths)  # no ledger: say so, rather than render nothing
        if task_id is not None:
            self._has_events(task_id)
            tasks = [task_id]
        else:
            tasks = [t for t in self.paths.task_ids() if is_safe_id(t)]
            tasks = [t for t in tasks if self.paths.task_events(t).exists()]
        for name in tasks:
            try:
                write_task_log(self.paths, name)
            except ChainBroken as exc:
                yield name, exc
            else:
                yield name, None

    def _has_events(self, task_id: str) -> None:
        if not self.paths.task_events(task_id).exists():  # validates the id
            raise LedgerError(f"task {task_id!r} has no events in project {self.paths.project_id}")

    def export_project(self, archive_path: str | Path, *, jobs: int = 1) -> Path:
        return self._run(lambda ledger: export_project(ledger, Path(archive_path), jobs=jobs))

    @staticmethod
    def import_project(
        root_dir: str | Path,
        archive_path: str | Path,
        project_id: str | None = None,
        *,
        jobs: int = 1,
    ) -> Imported:
        return import_project(Path(root_dir), Path(archive_path), project_id, jobs=jobs)


def _tail_head(paths: ProjectPaths) -> Head:
    manifest = read_manifest(paths)
    reader = ChainReader(paths.events, ProjectRecord, {"project_id": manifest.chain_project_id})
    return read_head(reader)
