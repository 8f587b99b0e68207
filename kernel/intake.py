"""Intake validation and tier routing [the original's `RouteDoDValidator` and `TierRouter`].

`validate` reports every problem of an intake at once (a person fixing a task file wants the
whole list, not one error per run). `route` applies `TierRules` and returns the tier with every
reason, so a decision can be audited and the rules tuned.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from protocol import (
    IntakeProblem,
    IntakeProblemCode,
    RoutingRule,
    StepPack,
    TaskIntake,
    Tier,
    TierDecision,
    TierReason,
    TierRules,
    ac_id_of,
    is_safe_id,
)

from .errors import IntakeInvalid
from .scope import glob_problem

DEFAULT_RULES = TierRules()
Code = IntakeProblemCode

_REQUIRED_TEXT = {
    "task_title": "a task needs a title",
    "target": "say what the task must achieve (the target)",
}
_REQUIRED_LISTS = {
    "execution_route": "give at least one route step (how the work will be done)",
    "acceptance_criteria": "give at least one acceptance criterion (how we will know it is done)",
}
_LISTS = (
    "execution_route",
    "acceptance_criteria",
    "allowed_paths",
    "forbidden_paths",
    "commands_to_run",
)


def validate(intake: TaskIntake, *, task_id: str | None = None) -> tuple[IntakeProblem, ...]:
    """Every problem of `intake`, in field order; empty when it is ready to route.

    `task_id`, when given, is the id the caller will use: it must be safe and agree with the
    intake's own `task_id` if that is set.
    """
    return tuple(_problems(intake, task_id))


def check(
    intake: TaskIntake, *, task_id: str | None = None, source: str | None = None
) -> TaskIntake:
    """Return `intake` unchanged, or raise `IntakeInvalid` listing every problem."""
    problems = validate(intake, task_id=task_id)
    if problems:
        raise IntakeInvalid(problems, source=source)
    return intake


def _problems(intake: TaskIntake, task_id: str | None) -> Iterator[IntakeProblem]:
    for name, reason in _REQUIRED_TEXT.items():
        if not str(getattr(intake, name)).strip():
            yield IntakeProblem(f"$.{name}", Code.MISSING, reason)
    for name in _LISTS:
        items: list[str] = getattr(intake, name)
        if name in _REQUIRED_LISTS and not any(i.strip() for i in items):
            yield IntakeProblem(f"$.{name}", Code.MISSING, _REQUIRED_LISTS[name])
        first: dict[str, int] = {}
        for i, item in enumerate(items):
            at = f"$.{name}[{i}]"
            if not item.strip():
                yield IntakeProblem(at, Code.BLANK_ITEM, "empty entry")
                continue
            if item in first:
                yield IntakeProblem(
                    at, Code.DUPLICATE, f"same as $.{name}[{first[item]}]: {item!r}"
                )
                continue
            first[item] = i
            if name.endswith("_paths"):
                problem = glob_problem(item)
                if problem:
                    yield IntakeProblem(at, Code.BAD_PATH, problem)
    yield from _ac_id_problems(intake.acceptance_criteria)
    both = sorted(set(intake.allowed_paths) & set(intake.forbidden_paths))
    for pattern in both:
        i = intake.forbidden_paths.index(pattern)
        yield IntakeProblem(
            f"$.forbidden_paths[{i}]",
            Code.PATH_CONFLICT,
            f"{pattern!r} is both allowed and forbidden",
        )
    yield from _id_problems(intake, task_id)


def _ac_id_problems(criteria: list[str]) -> Iterator[IntakeProblem]:
    """AC ids must be unique: reviews and rework packs refer to criteria by id."""
    seen: dict[str, int] = {}
    for i, text in enumerate(criteria):
        if not text.strip() or text in criteria[:i]:
            continue  # reported as blank or duplicate already
        ac_id = ac_id_of(text, i + 1)
        if ac_id in seen:
            yield IntakeProblem(
                f"$.acceptance_criteria[{i}]",
                Code.DUPLICATE_AC_ID,
                f"criterion id {ac_id} already used by $.acceptance_criteria[{seen[ac_id]}]",
            )
        else:
            seen[ac_id] = i


def _id_problems(intake: TaskIntake, task_id: str | None) -> Iterator[IntakeProblem]:
    if intake.task_id is not None and not is_safe_id(intake.task_id):
        yield IntakeProblem(
            "$.task_id", Code.BAD_ID, f"{intake.task_id!r} is not a safe id ([A-Za-z0-9._-])"
        )
    if task_id is not None and not is_safe_id(task_id):
        yield IntakeProblem("$.task_id", Code.BAD_ID, f"task id {task_id!r} is not a safe id")
    if task_id is not None and intake.task_id is not None and intake.task_id != task_id:
        yield IntakeProblem(
            "$.task_id",
            Code.ID_MISMATCH,
            f"the intake says {intake.task_id!r} but the task id given is {task_id!r}",
        )


def route(intake: TaskIntake, rules: TierRules = DEFAULT_RULES) -> TierDecision:
    """The tier for `intake` under `rules`, with every reason.

    Rules that fire vote tier3; when none fires the single reason is `within_tier2_limits`,
    stating the figures that were checked. An override comes first in the reasons when set.
    """
    fired = list(_tier3_reasons(intake, rules))
    rules_tier: Tier = "tier3" if fired else "tier2"
    reasons = fired or [
        TierReason(
            RoutingRule.WITHIN_TIER2_LIMITS,
            "tier2",
            f"{len(intake.execution_route)} route step(s) (max {rules.max_tier2_steps}), "
            f"{len(intake.allowed_paths)} allowed path(s) (max {rules.max_tier2_paths}), "
            "no risk flag, no destructive or security-sensitive wording",
        )
    ]
    override = intake.tier_override
    if override is None:
        return TierDecision(tier=rules_tier, rules_tier=rules_tier, reasons=reasons)
    if not rules.honour_override:
        note = TierReason(
            RoutingRule.OVERRIDE, rules_tier, f"override to {override} ignored (rules forbid it)"
        )
        return TierDecision(tier=rules_tier, rules_tier=rules_tier, reasons=[note, *reasons])
    if override == "tier2" and rules_tier == "tier3" and not rules.allow_override_to_tier2:
        note = TierReason(
            RoutingRule.OVERRIDE,
            "tier3",
            "override to tier2 refused: the rules below chose tier3 and "
            "allow_override_to_tier2 is false",
        )
        return TierDecision(tier="tier3", rules_tier="tier3", reasons=[note, *reasons])
    note = TierReason(RoutingRule.OVERRIDE, override, f"explicit override to {override}")
    return TierDecision(tier=override, rules_tier=rules_tier, reasons=[note, *reasons])


def _tier3_reasons(intake: TaskIntake, rules: TierRules) -> Iterator[TierReason]:
    for flag in intake.risk_flags:
        if flag in rules.tier3_risk_flags:
            yield TierReason(RoutingRule.RISK_FLAG, "tier3", f"declared risk: {flag.value}")
    steps = len(intake.execution_route)
    if steps > rules.max_tier2_steps:
        yield TierReason(
            RoutingRule.STEP_COUNT,
            "tier3",
            f"{steps} route steps; tier2 allows at most {rules.max_tier2_steps}",
        )
    paths = intake.allowed_paths
    if len(paths) > rules.max_tier2_paths:
        yield TierReason(
            RoutingRule.PATH_COUNT,
            "tier3",
            f"{len(paths)} allowed paths; tier2 allows at most {rules.max_tier2_paths}",
        )
    broad = [p for p in paths if p.strip() in rules.broad_path_patterns or p.startswith("**")]
    if broad:
        yield TierReason(
            RoutingRule.PATH_BREADTH, "tier3", f"whole-tree path pattern(s): {', '.join(broad)}"
        )
    tops = sorted({p.strip("/").split("/", 1)[0] for p in paths if p.strip()} - set(broad))
    if len(tops) > rules.max_tier2_top_dirs:
        yield TierReason(
            RoutingRule.PATH_BREADTH,
            "tier3",
            f"paths span {len(tops)} top-level entries ({', '.join(tops)}); tier2 allows at "
            f"most {rules.max_tier2_top_dirs}",
        )
    texts = list(_texts(intake))
    for rule, phrases in (
        (RoutingRule.DESTRUCTIVE_WORK, rules.destructive_phrases),
        (RoutingRule.SECURITY_SENSITIVE_WORK, rules.security_phrases),
    ):
        hits = _phrase_hits(phrases, texts)
        if hits:
            shown = "; ".join(f"{phrase!r} in {at}" for phrase, at in hits[:5])
            more = f" (+{len(hits) - 5} more)" if len(hits) > 5 else ""
            yield TierReason(rule, "tier3", f"{shown}{more}")


def _texts(intake: TaskIntake) -> Iterator[tuple[str, str]]:
    """(where, text) for every free-text field the wording rules read."""
    yield "$.task_title", intake.task_title
    yield "$.target", intake.target
    yield "$.description", intake.description
    for name in ("execution_route", "acceptance_criteria", "commands_to_run"):
        for i, text in enumerate(getattr(intake, name)):
            yield f"$.{name}[{i}]", text


def _phrase_hits(phrases: Iterable[str], texts: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(phrase, where) for each phrase found as whole words (trailing ``s`` allowed)."""
    hits = []
    for phrase in phrases:
        words = phrase.strip()
        if not words:
            continue
        pattern = re.compile(
            r"(?<![A-Za-z0-9_])" + re.escape(words) + r"s?(?![A-Za-z0-9_])", re.IGNORECASE
        )
        at = next((where for where, text in texts if pattern.search(text)), None)
        if at is not None:
            hits.append((words, at))
    return hits


def intake_of_pack(pack: StepPack) -> TaskIntake:
    """The intake a hand-written StepPack implies, so it can be routed like any other task."""
    view = pack.view
    title = view.title or view.objective or f"{view.task_id} {view.step_id}"
    return TaskIntake(
        task_title=title,
        target=view.objective or title,
        execution_route=[pack.step_description or title],
        acceptance_criteria=[c.text for c in view.criteria],
        task_id=view.task_id,
        description=pack.step_description,
        allowed_paths=list(view.allowed_paths),
        forbidden_paths=list(view.forbidden_paths),
        commands_to_run=list(view.commands_to_run),
        worker_backend=pack.worker_backend,
    )
