"""The QA reviewer [the original's StepQAReviewer]: judge one round on facts, not on claims.

`review(pack, result, facts, round_no=...)` weighs a worker's StepResult against its StepPack
and the facts the runner gathered (`WorkspaceFacts`) and returns a `QAReview`. It is a pure
function: same inputs, same review; it reads no file and runs no command.

What it checks (every check runs whatever gates the pack declares; the gates are how the
results are reported, not which checks happen):

- **worker**: a BLOCKED, FAIL or REWORK verdict, and a result that names another task, run
  or step;
- **acceptance**: every AC of the pack answered exactly once in `verification_results`, by its
  exact text, with ``met: true`` (missing, duplicate, unexpected and unmet ACs);
- **commands**: every entry of `commands_to_run` has a record in `commands_executed` (matched
  by exact command text; the last record of a command counts); a `required_command_exit_0`
  gate needs exit code 0; a `required_command_evidence_only` gate needs the record and its
  evidence but any exit code; a controller re-run whose exit code differs from the claim is a
  finding, and the re-run's code is the one that counts;
- **changes and scope**: files git says changed but the worker did not report, files reported
  but not changed, and each changed file against the allowed and forbidden globs (forbidden
  wins). Files under the run's own artifacts directory are evidence, not work, and are left
  out of these comparisons;
- **dependency policy**: manifest, lockfile and CI configuration changes against the pack's
  `dependency_policy` (see `kernel.dependencies.dependency_violation`);
- **evidence**: each evidence path in `commands_executed`, `verification_results` and
  `evidence_map` lies under ``.artifacts/agent_runs/<run_id>/`` (an absolute path or one with
  ``..`` is a finding and is never looked up) and exists; each `evidence_required` pattern
  matches at least one file (or, for ``step_result.json::<section>[*]``, the section is not
  empty).

Verdict: PASS when there is no finding at all, which is exactly when every gate passes (a
gate passes when no finding is attached to it; findings that belong to no declared gate still
block a PASS). FAIL when a finding is one that a rework must not be trusted to fix and a person
has to look at: the worker is BLOCKED (a precondition is missing), the result belongs to
another step, a forbidden path was touched, or the dependency policy was broken (each of these
is a change order in the original's terms). REWORK otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from protocol import (
    CommandCheck,
    Finding,
    Gate,
    GateResult,
    PathCheck,
    PatternResult,
    QAReason,
    QAReview,
    ReviewVerdict,
    ScopeCheck,
    StepPack,
    StepPackView,
    StepResult,
    Verdict,
    ac_id_of,
    scope_pattern_problem,
)

from .dependencies import dependency_violation
from .errors import ScopePatternError
from .facts import CommandRerun, WorkspaceFacts
from .scope import ScopeRules, glob_matches, is_under, normalize_path, parse_problem

R = QAReason

FAIL_REASONS: frozenset[QAReason] = frozenset(
    {R.WORKER_BLOCKED, R.RESULT_FOR_OTHER_STEP, R.SCOPE_FORBIDDEN, R.DEPENDENCY_POLICY_VIOLATION}
)
"""Reasons that make a review FAIL rather than REWORK."""

_PRIORITY = {reason: i for i, reason in enumerate(QAReason)}
_COMMAND_CODES = frozenset({R.COMMAND_MISSING, R.COMMAND_FAILED, R.COMMAND_CLAIM_CONTRADICTED})
_EVIDENCE_CODES = frozenset(
    {R.EVIDENCE_MISSING, R.EVIDENCE_OUTSIDE_ARTIFACTS, R.EVIDENCE_PATTERN_UNMATCHED}
)
_ACCEPTANCE_GATES = ("qa_acceptance_review", "qa_evidence_review")
# Which controller gate a finding belongs to: the first of these types the pack declares.
# Command findings go to the gates of their command first and fall back to these.
_ROUTES: dict[QAReason, tuple[str, ...]] = {
    R.AC_MISSING: _ACCEPTANCE_GATES,
    R.AC_DUPLICATE: _ACCEPTANCE_GATES,
    R.AC_UNEXPECTED: _ACCEPTANCE_GATES,
    R.AC_NOT_MET: _ACCEPTANCE_GATES,
    R.COMMAND_MISSING: ("qa_evidence_review",),
    R.COMMAND_FAILED: ("qa_evidence_review",),
    R.COMMAND_CLAIM_CONTRADICTED: ("qa_evidence_review",),
    R.SCOPE_FORBIDDEN: ("qa_scope_guard_review",),
    R.SCOPE_NOT_ALLOWED: ("qa_scope_guard_review",),
    R.CHANGE_NOT_REPORTED: ("qa_scope_guard_review",),
    R.CHANGE_CLAIMED_NOT_MADE: ("qa_scope_guard_review",),
    R.DEPENDENCY_POLICY_VIOLATION: ("qa_dependency_policy_review", "qa_scope_guard_review"),
    R.EVIDENCE_MISSING: ("qa_evidence_review",),
    R.EVIDENCE_OUTSIDE_ARTIFACTS: ("qa_evidence_review",),
    R.EVIDENCE_PATTERN_UNMATCHED: ("qa_evidence_review",),
}
_RESULT_SECTIONS = ("files_changed", "commands_executed", "verification_results", "evidence_map")


class _Issue(msgspec.Struct, frozen=True):
    code: QAReason
    message: str
    path: str | None = None
    command_index: int | None = None


def review(
    pack: StepPack,
    result: StepResult,
    facts: WorkspaceFacts,
    *,
    round_no: int,
) -> QAReview:
    """Review one round. Raises `ScopePatternError` when a glob in the pack is unusable.

    `facts` has no default on purpose: a review on claims alone must say so
    (`kernel.CLAIMS_ONLY`), and then lists what it could not check in `unchecked`.
    """
    view = pack.view
    rules = scope_rules_of(pack)

    issues = _worker_issues(view, result)
    missing, unexpected, unmet, ac_issues = _acceptance(view, result)
    commands, command_issues = _commands(view, result, facts)
    scope = _changes(view, rules, result, facts)
    paths, path_issues = _evidence_paths(view, result, facts)
    patterns, pattern_issues = _evidence_patterns(view, result, facts)
    issues += ac_issues + command_issues + scope.issues + path_issues + pattern_issues

    failing = {i.command_index for i in issues if i.command_index is not None}
    commands = [
        msgspec.structs.replace(c, passed=c.passed and c.index not in failing) for c in commands
    ]
    gates, findings = _attach(view.gates, issues)
    codes = sorted({i.code for i in issues}, key=_PRIORITY.__getitem__)
    return QAReview(
        task_id=view.task_id,
        run_id=view.run_id,
        step_id=view.step_id,
        round=round_no,
        verdict=verdict_for(codes),
        reason_codes=codes or [R.PASS_ALL_GATES],
        worker_verdict=result.verdict,
        worker_reason_code=result.reason_code,
        findings=findings,
        gates=gates,
        scope_checks=scope.checks,
        changed_files=sorted(facts.changed_files) if facts.changed_files is not None else [],
        claimed_files=list(result.files_changed),
        changed_not_claimed=scope.changed_not_claimed,
        claimed_not_changed=scope.claimed_not_changed,
        paths_checked=paths,
        pattern_results=patterns,
        command_checks=commands,
        missing_acs=missing,
        unexpected_acs=unexpected,
        unmet_acs=unmet,
        dependency_violations=scope.dependency_violations,
        unchecked=facts.unchecked,
        base_revision=facts.base,
    )


def verdict_for(codes: Sequence[QAReason]) -> ReviewVerdict:
    """The verdict a set of finding codes earns (no codes: PASS)."""
    if not codes or set(codes) == {R.PASS_ALL_GATES}:
        return ReviewVerdict.PASS
    if FAIL_REASONS & set(codes):
        return ReviewVerdict.FAIL
    return ReviewVerdict.REWORK


def primary_reason(review: QAReview) -> QAReason:
    """The most important of a review's reasons (see `QAReason`'s order)."""
    return min(review.reason_codes, key=_PRIORITY.__getitem__)


def scope_rules_of(pack: StepPack) -> ScopeRules:
    """The pack's scope rules, once every glob in it (scope and evidence patterns) is known to
    be usable; raises `ScopePatternError` naming the first that is not by the JSON path the
    pack used. Call it before gathering facts, so a bad pack fails before any work is done.

    Decoding has already refused scope globs of a bad form (`protocol.scope_pattern_problem`);
    what is left to find here is what only the matcher knows. An evidence pattern of a bad
    form is not an error: it matches nothing and the review reports it unmatched.
    """
    view = pack.view
    rules = ScopeRules.of(view)
    for i, req in enumerate(view.evidence_required):
        if "::" in req.path_pattern or scope_pattern_problem(req.path_pattern):
            continue
        problem = parse_problem(req.path_pattern)
        if problem:
            raise ScopePatternError(
                f"{view.evidence_required_at}[{i}].path_pattern", req.path_pattern, problem
            )
    return rules


def _worker_issues(view: StepPackView, result: StepResult) -> list[_Issue]:
    issues: list[_Issue] = []
    said = f"the worker reported {result.verdict.value} ({result.reason_code})"
    if result.verdict is Verdict.BLOCKED:
        blockers = "; ".join(result.blockers) or "no blockers given"
        issues.append(_Issue(R.WORKER_BLOCKED, f"{said}: {blockers}"))
    elif result.verdict is Verdict.FAIL:
        issues.append(_Issue(R.WORKER_FAILED, said))
    elif result.verdict is Verdict.REWORK:
        issues.append(_Issue(R.WORKER_VERDICT_NOT_PASS, said))
    for name in ("task_id", "run_id", "step_id"):
        claimed = getattr(result, name)
        expected = getattr(view, name)
        if claimed is not None and claimed != expected:
            issues.append(
                _Issue(
                    R.RESULT_FOR_OTHER_STEP,
                    f"the result's {name} is {claimed!r}; this pack's is {expected!r}",
                )
            )
    return issues


def _acceptance(
    view: StepPackView, result: StepResult
) -> tuple[list[str], list[str], list[str], list[_Issue]]:
    texts = {c.text for c in view.criteria}
    answers: dict[str, list[bool]] = {}
    unexpected: list[str] = []
    issues: list[_Issue] = []
    for i, vr in enumerate(result.verification_results):
        if vr.ac in texts:
            answers.setdefault(vr.ac, []).append(vr.met)
            continue
        unexpected.append(vr.ac)
        near = view.criterion(ac_id_of(vr.ac, 0))
        hint = f" (it names {near.id}, whose exact text is: {near.text})" if near else ""
        issues.append(
            _Issue(
                R.AC_UNEXPECTED,
                f"verification_results[{i}] quotes no acceptance criterion of the pack{hint}: "
                f"{vr.ac}",
            )
        )
    missing: list[str] = []
    unmet: list[str] = []
    for c in view.criteria:
        got = answers.get(c.text, [])
        if not got:
            missing.append(c.text)
            issues.append(
                _Issue(R.AC_MISSING, f"{c.id} has no verification result quoting it: {c.text}")
            )
            continue
        if len(got) > 1:
            issues.append(
                _Issue(R.AC_DUPLICATE, f"{c.id} is answered {len(got)} times, not once: {c.text}")
            )
        if not all(got):
            unmet.append(c.text)
            issues.append(_Issue(R.AC_NOT_MET, f"{c.id} is not met: {c.text}"))
    ids = {c.id for c in view.criteria}
    for key in result.evidence_map:
        if key not in ids and key not in texts:
            unexpected.append(key)
            issues.append(
                _Issue(R.AC_UNEXPECTED, f"evidence_map names {key!r}, not an AC of the pack")
            )
    return missing, unexpected, unmet, issues


def _commands(
    view: StepPackView, result: StepResult, facts: WorkspaceFacts
) -> tuple[list[CommandCheck], list[_Issue]]:
    checks: list[CommandCheck] = []
    issues: list[_Issue] = []
    counted = _counted_records(view, result)
    for i, command in enumerate(view.commands_to_run):
        gate_types = {g.type for g in view.gates if g.command_index == i}
        record = result.commands_executed[counted[i]] if i in counted else None
        rerun = facts.rerun(i)
        found: list[_Issue] = []
        where = f"commands_to_run[{i}] `{command}`"
        if record is None:
            found.append(_Issue(R.COMMAND_MISSING, f"no record of {where}", command_index=i))
        rerun_code = rerun.exit_code if rerun is not None else None
        if record is not None and rerun_code is not None and rerun_code != record.exit_code:
            found.append(
                _Issue(
                    R.COMMAND_CLAIM_CONTRADICTED,
                    f"{where}: the worker claimed exit code {record.exit_code}, the "
                    f"controller's re-run exited {rerun_code}",
                    command_index=i,
                )
            )
        if "required_command_exit_0" in gate_types:
            if rerun is not None and rerun.timed_out:
                found.append(
                    _Issue(
                        R.COMMAND_FAILED,
                        f"{where}: the controller's re-run timed out",
                        command_index=i,
                    )
                )
            else:
                code = _effective_exit(record.exit_code if record else None, rerun)
                if code is not None and code != 0:
                    found.append(
                        _Issue(R.COMMAND_FAILED, f"{where} exited {code}", command_index=i)
                    )
        issues += found
        checks.append(
            CommandCheck(
                index=i,
                command=command,
                claimed_exit_code=record.exit_code if record else None,
                rerun_exit_code=rerun.exit_code if rerun else None,
                rerun_timed_out=rerun.timed_out if rerun else False,
                rerun_detail=rerun.detail if rerun else "",
                evidence_path=record.evidence_path if record else None,
                passed=not found,
            )
        )
    return checks, issues


def _counted_records(view: StepPackView, result: StepResult) -> dict[int, int]:
    """The record that counts for each command the pack names, as commands_to_run index ->
    commands_executed index: the last record of exactly that command text."""
    last = {r.command: k for k, r in enumerate(result.commands_executed)}
    return {i: last[c] for i, c in enumerate(view.commands_to_run) if c in last}


def _effective_exit(claimed: int | None, rerun: CommandRerun | None) -> int | None:
    """Facts over claims: the re-run's exit code when there is one, else the claim."""
    if rerun is not None and rerun.exit_code is not None:
        return rerun.exit_code
    return claimed


class _Changes(msgspec.Struct, frozen=True):
    checks: list[ScopeCheck]
    changed_not_claimed: list[str]
    claimed_not_changed: list[str]
    dependency_violations: list[str]
    issues: list[_Issue]


def _changes(
    view: StepPackView, rules: ScopeRules, result: StepResult, facts: WorkspaceFacts
) -> _Changes:
    run_dir = view.run_dir
    claimed: set[str] = set()
    unsafe_claims: list[str] = []
    for raw in result.files_changed:
        norm = normalize_path(raw)
        if norm is None:
            unsafe_claims.append(raw)
        elif not is_under(norm, run_dir):
            claimed.add(norm)
    issues: list[_Issue] = []
    changed_not_claimed: list[str] = []
    claimed_not_changed: list[str] = []
    if facts.changed_files is None:
        subject = sorted(claimed)
        for raw in unsafe_claims:
            issues.append(
                _Issue(
                    R.SCOPE_NOT_ALLOWED,
                    f"claimed change {raw!r} is absolute or climbs out of the workspace",
                    path=raw,
                )
            )
    else:
        changed = {
            n
            for p in facts.changed_files
            if (n := normalize_path(p)) is not None and not is_under(n, run_dir)
        }
        subject = sorted(changed)
        changed_not_claimed = sorted(changed - claimed)
        claimed_not_changed = sorted(claimed - changed) + sorted(unsafe_claims)
        for path in changed_not_claimed:
            issues.append(
                _Issue(
                    R.CHANGE_NOT_REPORTED,
                    f"{path} changed (git) but is not in the result's files_changed",
                    path=path,
                )
            )
        for path in claimed_not_changed:
            issues.append(
                _Issue(
                    R.CHANGE_CLAIMED_NOT_MADE,
                    f"{path} is in files_changed but git shows no change to it",
                    path=path,
                )
            )
    checks: list[ScopeCheck] = []
    violations: list[str] = []
    for path in subject:
        check = rules.check(path)
        checks.append(check)
        if check.forbidden_matches:
            issues.append(
                _Issue(
                    R.SCOPE_FORBIDDEN,
                    f"{path} matches forbidden {', '.join(check.forbidden_matches)}",
                    path=path,
                )
            )
        elif not check.allowed:
            issues.append(_Issue(R.SCOPE_NOT_ALLOWED, f"{path} matches no allowed path", path=path))
        in_scope = check.allowed and not check.forbidden_matches
        violation = dependency_violation(path, view.dependency_policy, in_scope=in_scope)
        if violation:
            violations.append(violation)
            issues.append(_Issue(R.DEPENDENCY_POLICY_VIOLATION, violation, path=path))
    return _Changes(checks, changed_not_claimed, claimed_not_changed, violations, issues)


def _evidence_paths(
    view: StepPackView, result: StepResult, facts: WorkspaceFacts
) -> tuple[list[PathCheck], list[_Issue]]:
    command_of = {k: i for i, k in _counted_records(view, result).items()}
    refs: list[tuple[str, int, str, str, int | None]] = [
        ("commands_executed", k, r.command, r.evidence_path, command_of.get(k))
        for k, r in enumerate(result.commands_executed)
    ]
    refs += [
        ("verification_results", k, vr.ac, vr.evidence_path, None)
        for k, vr in enumerate(result.verification_results)
    ]
    k = 0
    for key, paths in result.evidence_map.items():
        for path in paths:
            refs.append(("evidence_map", k, key, path, None))
            k += 1

    existing = set(facts.artifact_files) if facts.artifact_files is not None else None
    run_dir = view.run_dir
    checks: list[PathCheck] = []
    issues: list[_Issue] = []
    for section, index, label, path, command_index in refs:
        where = f"{section}[{index}]"
        norm = normalize_path(path) if path.strip() else None
        prefix_ok = norm is not None and is_under(norm, run_dir)
        exists: bool | None = None
        if not path.strip():
            issues.append(
                _Issue(R.EVIDENCE_MISSING, f"{where} gives no evidence path", None, command_index)
            )
        elif not prefix_ok:
            why = "is absolute or climbs with '..'" if norm is None else f"is not under {run_dir}/"
            issues.append(
                _Issue(
                    R.EVIDENCE_OUTSIDE_ARTIFACTS,
                    f"{where} evidence {path!r} {why}; it was not looked at",
                    path,
                    command_index,
                )
            )
        elif existing is not None:
            exists = norm in existing
            if not exists:
                issues.append(
                    _Issue(
                        R.EVIDENCE_MISSING,
                        f"{where} evidence {path} does not exist",
                        path,
                        command_index,
                    )
                )
        checks.append(
            PathCheck(
                section=section,  # type: ignore[arg-type]
                index=index,
                label=label,
                evidence_path=path,
                prefix_ok=prefix_ok,
                exists=exists,
            )
        )
    return checks, issues


def _evidence_patterns(
    view: StepPackView, result: StepResult, facts: WorkspaceFacts
) -> tuple[list[PatternResult], list[_Issue]]:
    out: list[PatternResult] = []
    issues: list[_Issue] = []
    for req in view.evidence_required:
        pattern = req.path_pattern
        unmatched = f"evidence {req.id} ({pattern}) "
        if "::" in pattern:
            section = pattern.split("::", 1)[1].split("[", 1)[0].strip()
            size = len(getattr(result, section)) if section in _RESULT_SECTIONS else None
            out.append(PatternResult(id=req.id, pattern=pattern, count=size or 0))
            if size is None:
                issues.append(
                    _Issue(R.EVIDENCE_PATTERN_UNMATCHED, unmatched + "names no StepResult section")
                )
            elif size == 0:
                issues.append(
                    _Issue(R.EVIDENCE_PATTERN_UNMATCHED, unmatched + f"{section} is empty")
                )
            continue
        if facts.artifact_files is None:
            out.append(PatternResult(id=req.id, pattern=pattern, count=0, checked=False))
            continue
        found = glob_matches(pattern, facts.artifact_files)
        out.append(PatternResult(id=req.id, pattern=pattern, count=len(found), matches=found))
        if not found:
            norm = normalize_path(pattern)
            where = (
                "matches no file"
                if norm is not None and is_under(norm, view.run_dir)
                else f"lies outside {view.run_dir}/, where the controller looks for evidence"
            )
            issues.append(_Issue(R.EVIDENCE_PATTERN_UNMATCHED, unmatched + where, pattern))
    return out, issues


def _gates_of(issue: _Issue, gates: Sequence[Gate]) -> list[Gate]:
    """The gates a finding fails (see `_ROUTES`)."""
    hit: list[Gate] = []
    if issue.command_index is not None:
        own = [g for g in gates if g.command_index == issue.command_index]
        if issue.code in _COMMAND_CODES:
            hit += own
        elif issue.code in _EVIDENCE_CODES:
            hit += [g for g in own if g.type == "required_command_evidence_only"]
    if not (issue.code in _COMMAND_CODES and hit):
        for gate_type in _ROUTES.get(issue.code, ()):
            typed = [g for g in gates if g.type == gate_type]
            if typed:
                hit += typed
                break
    return hit


def _attach(
    gates: Sequence[Gate], issues: Sequence[_Issue]
) -> tuple[list[GateResult], list[Finding]]:
    attached: dict[str, set[QAReason]] = {g.gate_id: set() for g in gates}
    findings: list[Finding] = []
    for issue in issues:
        hit = _gates_of(issue, gates)
        for gate in hit:
            attached[gate.gate_id].add(issue.code)
        findings.append(
            Finding(
                code=issue.code,
                message=issue.message,
                gate_ids=[g.gate_id for g in hit],
                path=issue.path,
            )
        )
    results = [
        GateResult(
            gate_id=g.gate_id,
            type=g.type,
            owner=g.owner,
            passed=not attached[g.gate_id],
            pass_condition=g.pass_condition,
            target_ac=list(g.target_ac),
            findings=sorted(attached[g.gate_id], key=_PRIORITY.__getitem__),
        )
        for g in gates
    ]
    return results, findings
