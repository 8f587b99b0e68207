"""The `runner` command line. Each module holds the commands of one area."""

from ._group import main
from .exec_cmds import dispatch_rework, dispatch_step, exec_command
from .protocol_cmds import schema, validate

main.add_command(validate)
main.add_command(schema)
main.add_command(exec_command)
main.add_command(dispatch_step)
main.add_command(dispatch_rework)

__all__ = ["main"]
