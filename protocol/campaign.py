"""The campaign configuration file: how a campaign runs its tasks.

Every option of ``runner campaign`` that is not a path can also come from this file (the
command line wins), so a team can keep its limits, hooks and backend routing under version
control next to the queue.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from .ids import SafeId
from .scalars import NonNegInt, PosInt

PosFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegFloat = Annotated[float, msgspec.Meta(ge=0)]


class BackoffPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Delay before an infrastructure retry: `base_sec * factor**(n-1)`, capped at `max_sec`,
    spread by +/- `jitter` of itself."""

    base_sec: NonNegFloat = 1.0
    factor: Annotated[float, msgspec.Meta(ge=1)] = 2.0
    max_sec: NonNegFloat = 60.0
    jitter: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.0


class Hooks(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Shell commands run in a task's workspace (``/bin/sh -c``) under the supervisor.

    `after_create` (new worktree: install dependencies, ...) and `before_run` must succeed or
    the attempt fails as an infrastructure failure; `after_run` and `before_remove` failures
    are logged and recorded but do not change the verdict.
    """

    after_create: str | None = None
    before_run: str | None = None
    after_run: str | None = None
    before_remove: str | None = None
    timeout_sec: PosFloat = 600.0


class StepLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Limits for every agent step; each one given replaces the StepPack's own."""

    max_runtime_sec: PosFloat | None = None
    max_silence_sec: PosFloat | None = None
    max_memory_mb: PosInt | None = None


ExecutorKind = Literal["local", "dask", "dask-local"]


class ClusterConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where the steps run (docs/scale-out.md): here (`local`), on the Dask cluster of
    `scheduler` (`dask`), or on a LocalCluster of `workers` processes (`dask-local`); `remote`
    is the git URL workers fetch from (default: the workspace's path)."""

    executor: ExecutorKind = "local"
    scheduler: str | None = None
    workers: PosInt | None = None
    remote: str | None = None
    connect_timeout_sec: PosFloat = 30.0


class CampaignConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_parallel_steps: PosInt = 1
    max_rework_rounds: NonNegInt = 1
    max_cycles: PosInt | None = None
    max_stagnant_cycles: PosInt | None = None
    verify_commands: bool = False
    auto_plan_missing: bool = False
    worker_backend: str | None = None
    step_pack_map: dict[SafeId, str] = {}
    worker_backend_map: dict[SafeId, str] = {}
    limits: StepLimits = msgspec.field(default_factory=StepLimits)
    hooks: Hooks = msgspec.field(default_factory=Hooks)
    backoff: BackoffPolicy = msgspec.field(default_factory=BackoffPolicy)
    cluster: ClusterConfig = msgspec.field(default_factory=ClusterConfig)
