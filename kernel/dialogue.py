"""The heuristic controller: dialogue text to a requirements draft, deterministically.

No model, no network: keyword rules over sentences, so the same dialogue always gives the same
draft and a test can state what it must contain. It is a first draft for people to edit before
they freeze it, not a judge of intent. The rules, in order:

- A labelled line (``Goals:``, ``Constraints:``, ``Acceptance criteria:``, ``Allowed paths:``,
  ``Forbidden paths:``, ``Open questions:``, also as markdown headings) puts its own text and
  the bullet lines under it into that section.
- Otherwise each sentence of each utterance (a ``Speaker:`` prefix is dropped) is classified:
  a question that the next speaker does not answer is an open question; a sentence about tests
  passing or "done when" is an acceptance criterion; one with "must not", "never", "only",
  "without", ... a constraint; one with "need", "want", "should", "add", ... a goal.
- Paths (in backticks, or tokens with ``/``, a glob ``*`` or a file extension) in a sentence
  that forbids touching them ("do not touch", "never edit", "read-only", ...) are forbidden
  paths; in one that limits work to them ("only edit", "limit changes to", ...) allowed paths.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import msgspec

SECTIONS = (
    ("goals", "Goals"),
    ("constraints", "Constraints"),
    ("acceptance", "Acceptance Criteria"),
    ("allowed_paths", "Allowed Paths"),
    ("forbidden_paths", "Forbidden Paths"),
    ("open_questions", "Open Questions"),
)


class RequirementsDraft(msgspec.Struct, frozen=True):
    goals: list[str] = []
    constraints: list[str] = []
    acceptance: list[str] = []
    allowed_paths: list[str] = []
    forbidden_paths: list[str] = []
    open_questions: list[str] = []


_LABELS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(pattern, re.IGNORECASE), section)
    for pattern, section in [
        (r"goals?|objectives?|requirements?|what we want", "goals"),
        (r"constraints?|rules|limits|non[- ]goals?", "constraints"),
        (r"acceptance(?: criteria)?|done when|definition of done|success criteria", "acceptance"),
        (r"allowed(?: paths| files)?|in[- ]scope(?: paths)?|may edit|scope", "allowed_paths"),
        (
            r"forbidden(?: paths| files)?|out[- ]of[- ]scope(?: paths)?|do not touch|off[- ]limits",
            "forbidden_paths",
        ),
        (r"open questions?|questions?|unknowns?|tbd", "open_questions"),
    ]
]
_LABEL_LINE = re.compile(
    r"^\s*(?:#{1,6}\s*)?(?:\*\*)?(?P<label>[A-Za-z][A-Za-z -]{1,40}?)(?:\*\*)?\s*"
    r"(?::(?:\*\*)?\s*(?P<rest>.*)|$)"
)
_SPEAKER = re.compile(
    r"^\s*(?:\*\*)?(?P<name>[A-Za-z][\w .'-]{0,30}?)(?:\*\*)?\s*:\s+(?P<text>.*)$"
)
_BULLET = re.compile(r"^\s*(?:[-*+\u2022]|\d{1,3}[.)])\s+(?P<text>.*)$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`\"'(])")
_AC_PREFIX = re.compile(r"^AC[- ]?(\d+)\s*[:.)-]\s*", re.IGNORECASE)

_PATH_TOKEN = re.compile(
    r"`(?P<quoted>[^`\s]+)`"
    r"|(?<![\w@/])(?P<bare>(?:\.{0,2}/)?[\w.*-]+(?:/[\w.*-]*)+|[\w*-]+\.(?:py|md|json|toml|ya?ml|txt"
    r"|cfg|ini|lock|js|ts|tsx|jsx|rs|go|java|c|h|cpp|sh|sql|html|css))(?![\w/])"
)
_FORBID = re.compile(
    r"\b(?:do not|don't|never|must not|mustn't|should not|shouldn't|cannot|can't|no changes to"
    r"|not allowed to)\s+(?:\w+\s+){0,2}?(?:touch|edit|change|modify|write|delete|remove)\w*"
    r"|\bforbidden\b|\boff[- ]limits\b|\bread[- ]only\b|\bout of scope\b|\bleave\b.*\balone\b",
    re.IGNORECASE,
)
_ALLOW = re.compile(
    r"\bonly\s+(?:\w+\s+){0,2}?(?:touch|edit|change|modify|write|work)\w*"
    r"|\b(?:limit|restrict|confine)\w*\s+(?:\w+\s+){0,3}?to\b|\ballowed\b|\bin scope\b"
    r"|\b(?:may|can)\s+(?:only\s+)?(?:touch|edit|change|modify)\b",
    re.IGNORECASE,
)
_ACCEPTANCE = re.compile(
    r"\bacceptance\b|\bdone when\b|\bdefinition of done\b|\b(?:tests?|checks?|build|ci)\b"
    r".*\b(?:pass|passes|passing|green|succeed)\w*|\bexit(?:s)? (?:code )?0\b|\bAC[- ]?\d+\b"
    r"|\bverif(?:y|ied)\b|\bit works when\b|\bsuccess(?:ful)? (?:means|when)\b",
    re.IGNORECASE,
)
_CONSTRAINT = re.compile(
    r"\b(?:must not|mustn't|do not|don't|never|should not|shouldn't|cannot|can't|no more than"
    r"|at most|at least|only|without|avoid|keep|limit|constraint|forbidden|not allowed"
    r"|no new dependenc\w*|compatible|budget|deadline|within)\b",
    re.IGNORECASE,
)
_GOAL = re.compile(
    r"\b(?:need|needs|want|wants|goal|should|must|would like|build|implement|add|create"
    r"|support|make|fix|provide|let's|please|requirement|expose|write)\b",
    re.IGNORECASE,
)
_STOPWORDS = frozenset(
    re.findall(
        r"\w+",
        "the and for are but not you your with this that have has was were will would "
        "should could what which when where who how why can does did any all our out use "
        "its into than then them they there these those from about also just like more "
        "some such only must need want please yes now may might shall",
    )
)
_UNSURE = re.compile(r"\b(?:tbd|to be decided|not sure|unclear|undecided|open question)\b", re.I)


class _Utterance(msgspec.Struct):
    speaker: str
    sentences: list[str]


class _Labelled(msgspec.Struct):
    section: str
    text: str


def draft_from_dialogue(dialogue: str) -> RequirementsDraft:
    """Classify the dialogue's statements into the sections of a requirements draft."""
    found: dict[str, list[str]] = {name: [] for name, _ in SECTIONS}
    pieces = _pieces(dialogue)
    for index, piece in enumerate(pieces):
        if isinstance(piece, _Labelled):
            _add_to_section(piece.section, piece.text, found)
            continue
        reply = next((p for p in pieces[index + 1 :] if isinstance(p, _Utterance)), None)
        for sentence in piece.sentences:
            _classify(sentence, _answered(piece.speaker, sentence, reply), found)
    return RequirementsDraft(**{name: _unique(items) for name, items in found.items()})


def render_draft(draft: RequirementsDraft, *, generator: str) -> str:
    """The draft as markdown, one ``##`` section per kind, in a fixed order."""
    lines = [
        "# Requirements (draft)",
        "",
        f"Generated by {generator}. Review and edit this file, then freeze it with",
        "`runner requirements freeze --input-dir DIR --approve --approved-by NAME`.",
    ]
    for name, title in SECTIONS:
        items: list[str] = getattr(draft, name)
        lines += ["", f"## {title}", ""]
        if not items:
            lines.append("_None stated._")
        elif name == "acceptance":
            lines += [f"- {item}" for item in _numbered(items)]
        elif name.endswith("_paths"):
            lines += [f"- `{item}`" for item in items]
        else:
            lines += [f"- {item}" for item in items]
    return "\n".join(lines) + "\n"


def _pieces(dialogue: str) -> list[_Utterance | _Labelled]:
    """The dialogue in order: utterances (speaker, sentences) and labelled items."""
    pieces: list[_Utterance | _Labelled] = []
    section: str | None = None
    speaker = ""
    for raw in dialogue.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw.strip()
        if not line:
            section = None
            continue
        match = _SPEAKER.match(line)
        if match is not None and _label_of(line) is None:
            speaker, line = match["name"].strip().casefold(), match["text"].strip()
        label = _label_of(line)
        if label is not None:
            section, rest = label
            if rest:
                pieces.append(_Labelled(section, rest))
            continue
        bullet = _BULLET.match(line)
        if bullet is not None:
            line = bullet["text"].strip()
            if section is not None:
                pieces.append(_Labelled(section, line))
                continue
        section = None
        sentences = [s.strip() for s in _SENTENCE_END.split(line) if s.strip()]
        last = pieces[-1] if pieces else None
        if isinstance(last, _Utterance) and last.speaker == speaker:
            last.sentences.extend(sentences)
        else:
            pieces.append(_Utterance(speaker, sentences))
    return pieces


def _label_of(line: str) -> tuple[str, str] | None:
    match = _LABEL_LINE.match(line)
    if match is None:
        return None
    label = match["label"].strip()
    for pattern, section in _LABELS:
        if pattern.fullmatch(label):
            return section, (match["rest"] or "").strip()
    return None


def _add_to_section(section: str, text: str, found: dict[str, list[str]]) -> None:
    if section.endswith("_paths"):
        paths = _paths_in(text) or [p.strip() for p in re.split(r"[,;]\s*", text) if p.strip()]
        found[section].extend(p for p in paths if " " not in p)
    else:
        found[section].append(_tidy(text))


def _answered(speaker: str, question: str, reply: _Utterance | None) -> bool:
    """A question counts as answered when the next utterance is someone else's, states
    something (a sentence that is not a question) and shares a content word with it."""
    if reply is None or reply.speaker == speaker:
        return False
    asked = _content_words(question)
    return any(not s.rstrip().endswith("?") and asked & _content_words(s) for s in reply.sentences)


def _content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]{3,}", text.casefold()) if w not in _STOPWORDS}


def _classify(sentence: str, answered: bool, found: dict[str, list[str]]) -> None:
    text = _tidy(sentence)
    if not text:
        return
    paths = _paths_in(text)
    if paths and _FORBID.search(text):
        found["forbidden_paths"].extend(paths)
    elif paths and _ALLOW.search(text):
        found["allowed_paths"].extend(paths)
    if text.endswith("?") or _UNSURE.search(text):
        if not answered or _UNSURE.search(text):
            found["open_questions"].append(text)
    elif _ACCEPTANCE.search(text):
        found["acceptance"].append(text)
    elif _CONSTRAINT.search(text):
        found["constraints"].append(text)
    elif _GOAL.search(text):
        found["goals"].append(text)


def _paths_in(text: str) -> list[str]:
    paths = []
    for match in _PATH_TOKEN.finditer(text):
        token = (match["quoted"] or match["bare"] or "").rstrip(".,;:")
        if token.startswith("./"):
            token = token[2:]
        if token and ("/" in token or "*" in token or "." in token.lstrip(".")):
            paths.append(token)
    return paths


def _tidy(text: str) -> str:
    return " ".join(text.split()).strip()


def _numbered(items: list[str]) -> list[str]:
    """``ACn: text`` for each criterion: stated numbers kept, the rest numbered after them."""
    stated = {int(m[1]) for m in map(_AC_PREFIX.match, items) if m is not None}
    free = (n for n in range(1, len(items) + len(stated) + 1) if n not in stated)
    out = []
    for item in items:
        match = _AC_PREFIX.match(item)
        if match is not None:
            out.append(f"AC{int(match[1])}: {item[match.end() :]}")
        else:
            out.append(f"AC{next(free)}: {item}")
    return out


def _unique(items: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for item in items:
        key = item.casefold()
        if item and key not in seen:
            seen.add(key)
            out.append(item)
    return out
