"""The `runner` command line. Each module holds the commands of one area."""

from ._group import main
from .ledger_cmds import ledger
from .protocol_cmds import schema, validate

main.add_command(validate)
main.add_command(schema)
main.add_command(ledger)

__all__ = ["main"]
