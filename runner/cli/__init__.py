"""The `runner` command line. Each module holds the commands of one area."""

from ._group import main
from .exec_cmds import exec_command
from .protocol_cmds import schema, validate

main.add_command(validate)
main.add_command(schema)
main.add_command(exec_command)

__all__ = ["main"]
