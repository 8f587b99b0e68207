"""The one error type every decoder in `protocol` raises."""

from __future__ import annotations


class ProtocolError(Exception):
    """A payload that does not match its wire shape.

    Carries where the payload came from (`source`: a file path or a label such as ``<stdin>``),
    the JSON path of the offending value (``$.gates[2].command_index``; ``$`` for the document
    itself; empty for a value that is in no document, such as a command-line id) and a human
    reason. Callers print ``str(err)``; tools read the attributes.
    """

    def __init__(self, reason: str, *, path: str = "$", source: str | None = None) -> None:
        self.reason = reason
        self.path = path
        self.source = source
        super().__init__(reason, path, source)

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        at = f"{self.path}: " if self.path else ""
        return f"{where}{at}{self.reason}"

    def with_source(self, source: str) -> ProtocolError:
        """The same error, attributed to `source` (decoders learn the file name late)."""
        return ProtocolError(self.reason, path=self.path, source=source)
