"""The `runner` command line. Each module holds the commands of one area."""

from ._group import main
from .protocol_cmds import schema, validate
from .recovery_cmds import checkpoint, requirements, rollback_cmd

main.add_command(validate)
main.add_command(schema)
main.add_command(checkpoint)
main.add_command(rollback_cmd)
main.add_command(requirements)

__all__ = ["main"]
