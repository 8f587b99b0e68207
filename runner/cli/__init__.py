"""The `runner` command line. Each module holds the commands of one area."""

from ._group import main
from .protocol_cmds import schema, validate

main.add_command(validate)
main.add_command(schema)

__all__ = ["main"]
