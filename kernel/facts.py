"""What the runner found out for itself about a round, for the QA reviewer to weigh claims
against.

The kernel cannot look at the disk, so the runner gathers these (see `runner.facts`) and passes
them in. Every field may be absent (None): a review made without a workspace has only the
worker's claims, and says so in `QAReview.unchecked` instead of pretending to have checked.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from protocol.qa_review import Unchecked

NonNegInt = Annotated[int, msgspec.Meta(ge=0)]


class CommandRerun(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The controller's own run of ``commands_to_run[index]`` in the workspace.

    `exit_code` is None when no exit code exists: the run timed out (`timed_out`) or could not
    start (`detail` says why). `detail` also carries the tail of the output of a failing run.
    """

    index: NonNegInt
    command: str
    exit_code: int | None
    timed_out: bool = False
    duration_ms: NonNegInt = 0
    detail: str = ""


class WorkspaceFacts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Facts about one round's workspace.

    - `changed_files`: every path git says differs from `base` (committed, staged, unstaged,
      deleted, untracked and not ignored), or None when unknown;
    - `artifact_files`: every regular file under the run's artifacts directory
      (``.artifacts/agent_runs/<run_id>/``), symlinks excluded, or None when not listed; the
      reviewer answers both "does this evidence path exist" and "what matches this
      evidence pattern" from it;
    - `command_reruns`: the controller's re-runs of the pack's commands, or None when the
      commands were not re-run;
    - `base`: the commit the changes were measured against.
    """

    changed_files: tuple[str, ...] | None = None
    artifact_files: tuple[str, ...] | None = None
    command_reruns: tuple[CommandRerun, ...] | None = None
    base: str | None = None

    @property
    def unchecked(self) -> list[Unchecked]:
        """The kinds of fact missing here, in a fixed order."""
        out: list[Unchecked] = []
        if self.changed_files is None:
            out.append("changed_files")
        if self.artifact_files is None:
            out.append("evidence_files")
        if self.command_reruns is None:
            out.append("command_exit_codes")
        return out

    def rerun(self, index: int) -> CommandRerun | None:
        """The (last) re-run of ``commands_to_run[index]``, if there was one."""
        found = [r for r in self.command_reruns or () if r.index == index]
        return found[-1] if found else None


CLAIMS_ONLY = WorkspaceFacts()
"""No facts at all: a review on the worker's word (``runner review-step`` without a workspace)."""
