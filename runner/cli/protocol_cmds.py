"""`runner validate` and `runner schema`: the protocol from the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

import protocol


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option(
    "--kind",
    type=click.Choice(sorted(protocol.KINDS)),
    help="Payload kind; detected from the document's keys when omitted.",
)
def validate(file: Path, kind: str | None) -> None:
    """Check that FILE is a valid payload: prints `ok: <kind>` (exit 0) or the error (exit 2)."""
    if str(file) == "-":
        raw, source = sys.stdin.buffer.read(), "<stdin>"
    else:
        try:
            raw, source = file.read_bytes(), str(file)
        except OSError as exc:
            raise protocol.ProtocolError(
                f"cannot read file: {exc.strerror or exc}", source=str(file)
            ) from None
    name, _ = protocol.decode_kind(raw, kind, source=source)
    click.echo(f"ok: {name}")


@click.command()
@click.argument("kind", type=click.Choice(sorted(protocol.KINDS)), required=False)
def schema(kind: str | None) -> None:
    """Print the JSON Schema of a payload KIND (without KIND: list the kinds)."""
    if kind is None:
        for name in sorted(protocol.KINDS):
            click.echo(name)
        return
    click.echo(json.dumps(protocol.schema(kind), indent=2))
