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

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine.model import utcnow
from engine.store.ops_protocol import OpsRecords  # noqa: F401 - found here too (see its module)

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
