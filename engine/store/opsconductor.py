"""OpsConductor's records in the store: jobs, their executions and branches with their serials, and
the figures computed over them (engine.store's protocol; storage.opsconductor implements it).

A job's execution is an ordinary execution of the engine; its OpsConductor row gives it a serial
(`J20260001.0001`, a counter per job) and each of its branch steps one (`J20260001.0001.0001`),
assigned in the transaction that inserts the rows. The rows' status, times and exit codes follow
the execution's and its branch steps' (the store copies them in the transaction that changes those),
so that the figures are sums over one indexed table. Targets are registry entries of kind
`TARGET_KIND` (engine.store.registry).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from engine.model import utcnow

TARGET_KIND = "target"
#: a job waiting for its `scheduled_at`, and one whose time came and that was started
SCHEDULED = "scheduled"
SCHEDULE_STARTED = "started"
#: statuses of a branch or an execution that hold a target
OPEN_STATUSES = ("pending", "running")


@dataclass(slots=True)
class OpsJob:
    id: int
    uuid: str
    serial: str
    name: str
    description: str = ""
    job_type: str = "command"
    actions: list[Any] = field(default_factory=list)
    target_ids: list[Any] = field(default_factory=list)
    scheduled_at: datetime | None = None
    schedule_state: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    #: the status of its latest execution (None: it has none)
    last_status: str | None = None


@dataclass(slots=True)
class OpsBranch:
    id: int
    uuid: str
    serial: str
    ops_execution_id: int
    number: int
    job_id: int
    target_id: int
    target_serial: str
    target_name: str
    step_pk: int | None = None
    step_id: str | None = None
    status: str = "pending"
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration: float | None = None
    exit_code: int | None = None
    error: str | None = None
    created_at: datetime = field(default_factory=utcnow)


@dataclass(slots=True)
class OpsExecution:
    id: int
    uuid: str
    serial: str
    job_id: int
    number: int
    execution_pk: int | None = None
    #: the engine's execution (None until submitted, or when it could not be)
    execution_id: str | None = None
    status: str = "pending"
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration: float | None = None
    error: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    branches: list[OpsBranch] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class BranchTarget:
    """A branch to create: its target as it is when the execution starts."""

    target_id: int
    target_serial: str
    target_name: str


@dataclass(slots=True, frozen=True)
class Outcomes:
    """Counts over executions or branches."""

    total: int = 0
    completed: int = 0
    failed: int = 0
    #: ended otherwise (cancelled)
    other_finished: int = 0
    #: mean seconds of those that ended (None: none did)
    average_duration: float | None = None

    @property
    def finished(self) -> int:
        return self.completed + self.failed + self.other_finished


@dataclass(slots=True, frozen=True)
class TargetOutcomes:
    target_id: int
    target_serial: str
    target_name: str
    outcomes: Outcomes


@dataclass(slots=True, frozen=True)
class HistoryEntry:
    """A branch of a target's history, with its job's name."""

    branch: OpsBranch
    job_name: str


@dataclass(slots=True, frozen=True)
class SearchHit:
    """A search result: an execution (`branch` None) or a branch of it."""

    execution: OpsExecution
    job_serial: str
    job_name: str
    branch: OpsBranch | None = None


class OpsRecords(Protocol):
    # -- jobs ----------------------------------------------------------------------------------------
    async def create_ops_job(self, *, name: str, description: str, job_type: str, actions: Sequence[Mapping[str, Any]],
                             target_ids: Sequence[int], scheduled_at: datetime | None) -> OpsJob:
        """A new job, its serial `J<year><n:04>` from the year's counter in the same transaction;
        with `scheduled_at` it waits for that time (schedule_state SCHEDULED)."""

    async def get_ops_job(self, *, id: int | None = None, serial: str | None = None) -> OpsJob | None: ...

    async def list_ops_jobs(self, *, sort: str, descending: bool, limit: int, offset: int) -> tuple[list[OpsJob], int]:
        """A page by `sort` (id, name, created_at, scheduled_at, serial), and the total."""

    async def scheduled_ops_jobs(self) -> list[OpsJob]:
        """Jobs waiting for their time, soonest first."""

    async def take_scheduled_job(self, job_id: int) -> bool:
        """SCHEDULED -> SCHEDULE_STARTED, guarded: of two servers on one store, one starts it."""

    # -- executions ----------------------------------------------------------------------------------
    async def begin_ops_execution(self, job_id: int, targets: Sequence[BranchTarget]) -> OpsExecution:
        """The job's next execution (`<job serial>.<n:04>`, the job's counter) and a branch per target
        (`.<n:04>` in order), pending, in one transaction."""

    async def link_ops_execution(self, ops_execution_id: int, execution_id: str, branch_steps: Mapping[int, str]) -> None:
        """The execution running it, and each branch's step (branch id -> step id); their state is
        copied at once and follows theirs from then on."""

    async def fail_ops_execution(self, ops_execution_id: int, error: str) -> None:
        """It could not be submitted: failed, with its branches, and why."""

    async def get_ops_execution(self, *, id: int | None = None, serial: str | None = None) -> OpsExecution | None:
        """With its branches."""

    async def ops_job_executions(self, job_id: int, *, limit: int = 100) -> list[OpsExecution]:
        """Newest first, with their branches."""

    async def get_ops_branch(self, serial: str) -> OpsBranch | None: ...

    async def find_ops_serials(self, serials: Sequence[str]) -> dict[str, OpsExecution | OpsBranch]:
        """The executions and branches among `serials` that exist, by serial."""

    async def search_ops(self, text: str, *, executions: bool, branches: bool, limit: int) -> list[SearchHit]:
        """Executions and/or branches whose serial, job name or target name contains `text`
        (case-insensitive), newest first."""

    # -- targets -------------------------------------------------------------------------------------
    async def delete_idle_target(self, target_id: int) -> bool | None:
        """Delete the target unless it has pending or running branches: True deleted, False refused
        (it has some), None no such target. One guarded statement."""

    # -- figures -------------------------------------------------------------------------------------
    async def target_outcomes(self, target_id: int, since: datetime) -> Outcomes: ...

    async def target_history(self, target_id: int, *, limit: int, offset: int) -> tuple[list[HistoryEntry], int]:
        """Its branches, newest first, with their job's name; and how many there are."""

    async def execution_outcomes(self, since: datetime, *, job_id: int | None = None) -> Outcomes: ...

    async def execution_buckets(self, start: datetime, unit: str, count: int) -> list[tuple[str, Outcomes]]:
        """Outcomes of the executions created in each of `count` buckets of `unit` (hour, day, week,
        month) from `start` (a bucket's start, UTC), in order, empty ones too (without durations):
        (the bucket's start as ISO 8601 text, its outcomes)."""

    async def job_target_outcomes(self, job_id: int, since: datetime) -> list[TargetOutcomes]:
        """The job's branches per target."""
