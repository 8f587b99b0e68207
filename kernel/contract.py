"""The tier3 contract compiler: intake in, ``master_contract.md`` and its conformance out.

Contract-first work starts from a document both sides can point at. The compiler fills a
markdown template with the intake and the routing decision, keeps a byte-exact snapshot of the
template it used, and reports which required headings the result carries. Same inputs give the
same bytes (no clock, no dict order, no environment), so a contract can be re-derived and
compared later.

Templates use ``{{name}}`` placeholders (see `PLACEHOLDERS`). A placeholder alone on its line is
a block (lists become bullets, the route a numbered list); inside other text it is one line.
User text is escaped so that it cannot forge a heading or open a code fence, which would fake
conformance.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import msgspec

from protocol import (
    ConformanceReport,
    HeadingCheck,
    TaskIntake,
    TierDecision,
    encode_pretty,
)

from .errors import TemplateInvalid
from .markdown import lines as markdown_lines

REQUIRED_HEADINGS: tuple[str, ...] = (
    "Target",
    "Tier Decision",
    "Execution Route",
    "Scope",
    "Acceptance Criteria",
    "Verification Commands",
    "Risks",
    "Evidence",
    "Rework Policy",
)

DEFAULT_TEMPLATE = """\
# Master Contract: {{task_title}}

Task `{{task_id}}`, run `{{run_id}}`, routed to **{{tier}}**.

## Target

{{target}}

## Description

{{description}}

## Tier Decision

{{tier_reasons}}

## Execution Route

{{execution_route}}

## Scope

Allowed paths (gitignore-style globs, relative to the workspace):

{{allowed_paths}}

Forbidden paths:

{{forbidden_paths}}

## Acceptance Criteria

{{acceptance_criteria}}

## Verification Commands

{{commands_to_run}}

## Risks

{{risk_flags}}

## Evidence

Every command's output and every criterion's evidence is stored under
`.artifacts/agent_runs/{{run_id}}/`; a claim without evidence there does not count.

## Rework Policy

A failing QA review sends the step back with a rework pack (a new revision, R+1/S0); an
infrastructure failure (a limit breach, a crash, unparsable output) is retried (same R, S+1).
"""

PLACEHOLDERS: tuple[str, ...] = (
    "task_id",
    "run_id",
    "tier",
    "task_title",
    "target",
    "description",
    "tier_reasons",
    "execution_route",
    "allowed_paths",
    "forbidden_paths",
    "acceptance_criteria",
    "commands_to_run",
    "risk_flags",
    "worker_backend",
)

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_ALONE = re.compile(r"^\s*\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}\s*$")
_NEEDS_ESCAPE = re.compile(r"^(\s*)([#>]|```|~~~|[-=]{3,}\s*$)")


class ContractBundle(msgspec.Struct, frozen=True):
    """The three files of a compiled contract, as bytes for the runner to write."""

    master_contract: bytes
    template_snapshot: bytes
    conformance_report: bytes
    report: ConformanceReport


def compile_contract(
    intake: TaskIntake,
    decision: TierDecision,
    *,
    task_id: str,
    run_id: str,
    template: str = DEFAULT_TEMPLATE,
    required_headings: Sequence[str] = REQUIRED_HEADINGS,
) -> ContractBundle:
    """Render the contract; raise `TemplateInvalid` for unknown placeholders."""
    unknown = sorted({m.group(1) for m in _PLACEHOLDER.finditer(template)} - set(PLACEHOLDERS))
    if unknown:
        raise TemplateInvalid(
            [f"unknown placeholder {{{{{name}}}}}" for name in unknown]
            + [f"known: {', '.join(PLACEHOLDERS)}"]
        )
    values = _values(intake, decision, task_id=task_id, run_id=run_id)
    contract = _render(template.replace("\r\n", "\n"), values)
    contract_bytes = contract.encode("utf-8")
    template_bytes = template.encode("utf-8")
    checks = check_headings(contract, required_headings)
    report = ConformanceReport(
        task_id=task_id,
        run_id=run_id,
        template_sha256=hashlib.sha256(template_bytes).hexdigest(),
        contract_sha256=hashlib.sha256(contract_bytes).hexdigest(),
        conformant=all(c.present for c in checks),
        headings=checks,
        missing=[c.heading for c in checks if not c.present],
    )
    return ContractBundle(
        master_contract=contract_bytes,
        template_snapshot=template_bytes,
        conformance_report=encode_pretty(report),
        report=report,
    )


def check_headings(markdown: str, required: Sequence[str]) -> list[HeadingCheck]:
    """Each required heading (any ATX level, case and spacing ignored) with its first line;
    headings inside fenced code blocks do not count."""
    found: dict[str, int] = {}
    for line in markdown_lines(markdown):
        if line.level:
            found.setdefault(_norm(line.title), line.number)
    return [
        HeadingCheck(heading=h, present=_norm(h) in found, line=found.get(_norm(h)))
        for h in required
    ]


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _values(
    intake: TaskIntake, decision: TierDecision, *, task_id: str, run_id: str
) -> dict[str, list[str] | str]:
    return {
        "task_id": task_id,
        "run_id": run_id,
        "tier": decision.tier,
        "task_title": intake.task_title,
        "target": intake.target,
        "description": intake.description or "(none given)",
        "tier_reasons": [f"{r.rule.value} ({r.tier}): {r.detail}" for r in decision.reasons],
        "execution_route": intake.execution_route,
        "allowed_paths": [f"`{p}`" for p in intake.allowed_paths],
        "forbidden_paths": [f"`{p}`" for p in intake.forbidden_paths],
        "acceptance_criteria": intake.acceptance_criteria,
        "commands_to_run": [f"`{c}`" for c in intake.commands_to_run],
        "risk_flags": [f.value for f in intake.risk_flags],
        "worker_backend": intake.worker_backend or "(default)",
    }


def _render(template: str, values: dict[str, list[str] | str]) -> str:
    out = []
    for line in template.split("\n"):
        alone = _ALONE.match(line)
        if alone:
            out.append(_block(alone.group(1), values[alone.group(1)]))
        else:
            out.append(_PLACEHOLDER.sub(lambda m: _inline(values[m.group(1)]), line))
    return "\n".join(out)


def _block(name: str, value: list[str] | str) -> str:
    if isinstance(value, str):
        return "\n".join(_escape(line) for line in value.strip().split("\n")) or "(none given)"
    if not value:
        return "- (none)"
    if name == "execution_route":
        return "\n".join(f"{i}. {_inline(item)}" for i, item in enumerate(value, start=1))
    return "\n".join(f"- {_inline(item)}" for item in value)


def _inline(value: list[str] | str) -> str:
    text = value if isinstance(value, str) else ", ".join(value)
    return _escape(" ".join(text.split()))


def _escape(line: str) -> str:
    """Make a line of user text plain: no heading, quote, fence or setext underline."""
    return _NEEDS_ESCAPE.sub(lambda m: m.group(1) + "\\" + m.group(2), line)
