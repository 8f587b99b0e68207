"""The `runner` command line. Each module holds the commands of one area."""

from ._group import main
from .demo_cmds import demo, status
from .engine_cmds import campaign, run_cycle
from .exec_cmds import dispatch_rework, dispatch_step, exec_command
from .kernel_cmds import negotiate, prepare, prepare_next, queue
from .kernel_review_cmds import review_step
from .ledger_cmds import ledger
from .protocol_cmds import schema, validate
from .recovery_cmds import checkpoint, requirements, rollback_cmd

main.add_command(validate)
main.add_command(schema)
main.add_command(review_step)
main.add_command(prepare)
main.add_command(negotiate)
main.add_command(prepare_next)
main.add_command(queue)
main.add_command(checkpoint)
main.add_command(rollback_cmd)
main.add_command(requirements)
main.add_command(exec_command)
main.add_command(dispatch_step)
main.add_command(dispatch_rework)
main.add_command(ledger)
main.add_command(campaign)
main.add_command(run_cycle)
main.add_command(demo)
main.add_command(status)

__all__ = ["main"]
