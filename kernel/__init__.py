"""The kernel: the system's judgement as pure functions over `protocol` Structs.

No I/O here: the runner gathers facts (git, files, exit codes) and passes them in.
"""

from protocol.attempts import AttemptKind, AttemptPointer, classify, next_pointers

__all__ = ["AttemptKind", "AttemptPointer", "classify", "next_pointers"]
