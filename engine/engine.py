"""The engine: owns every live execution; commands go down through its methods, events come up
through `subscribe()`. It implements `engine.client.EngineClient` in-process."""

from __future__ import annotations

import asyncio
import getpass
import logging
import math
import os
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.artifacts import ArtifactStore
from engine.env_names import env_name_problem
from engine.errors import Conflict, InvalidRequest, NotFound, ShuttingDown, StoreError
from engine.events import ArtifactAdded, ArtifactDeleted, ExecutionCreated, ExecutionDeleted
from engine.execution.run import ExecutionPlan, ExecutionRun, StepPlan
from engine.execution.state import ExecutionState
from engine.hub import Hub, Subscriber
from engine.masking import Masker
from engine.model import (
    AbortReason,
    Artifact,
    ArtifactFilter,
    ArtifactType,
    Execution,
    ExecutionFilter,
    ExecutionKind,
    ExecutionStatus,
    LogLine,
    Step,
    StepKind,
    StepStatus,
    new_id,
    utcnow,
)
from engine.ownership import owner_is_alive, this_engine
from engine.runners.base import CommandSpec, Runner
from engine.store import Store, StoreStats
from engine.store_writer import StoreWriter
from engine.surrogates import replace_in, replace_surrogates, unencodable
from engine.workflow.plan import plan_workflow

if TYPE_CHECKING:
    from engine.workflow.load import Workflow

log = logging.getLogger(__name__)
#: beyond a run's kill grace, what its end may take (the store barrier, the runner's own cleanup)
_STOP_SLACK = 5.0


@dataclass(slots=True)
class EngineConfig:
    #: seconds between SIGTERM and SIGKILL when stopping a command
    kill_grace: float = 10.0
    #: seconds running executions get to stop at shutdown before they are abandoned
    shutdown_grace: float = 10.0
    #: targets known besides `local` (from the user's targets file), name -> target config
    targets: dict[str, Any] = field(default_factory=dict)


class Engine:
    def __init__(
        self,
        store: Store,
        data_dir: Path,
        config: EngineConfig | None = None,
        *,
        runner_factory: Callable[[str, Any], Runner] | None = None,
    ) -> None:
        self.store = store
        self.data_dir = Path(data_dir)
        self.config = config or EngineConfig()
        self.hub = Hub()
        self.writer = StoreWriter(store, self.hub.sink)
        self.writer.on_failed = self._not_stored
        self.artifacts = ArtifactStore(self.data_dir / "artifacts")
        self._runner_factory = runner_factory or _default_runner_factory
        self._runners: dict[str, Runner] = {}
        self._runs: dict[str, tuple[ExecutionState, asyncio.Task[None]]] = {}
        #: each live run's kill grace (what bounds the wait of `cancel_and_delete`)
        self._kill_graces: dict[str, float] = {}
        self._closing = False
        self._started = False

    @property
    def description(self) -> str:
        return str(self.data_dir)

    # -- life cycle ------------------------------------------------------------------------------
    async def start(self) -> list[str]:
        """Open the store, mark what a dead engine left running as lost (and stop the processes
        they left running), start writing. Returns the ids of the executions found lost."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        await self.store.open()
        lost = await mark_lost(self.store)
        self.writer.start()
        self._started = True
        # (the process's garbage collector is the program's to tune, not this library's: the
        # `stepflow` command freezes what exists at this point once start() returns)
        return lost

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop intake, ask running executions to stop (reason "shutdown"), wait up to the grace
        period, abandon the rest (recorded as cancelled), flush the store and close it."""
        if not self._started:
            return
        self._closing = True
        grace = self.config.shutdown_grace if grace is None else grace
        for state, _task in list(self._runs.values()):
            state.request_stop(AbortReason.SHUTDOWN, "cancelled: the engine was shutting down")
        tasks = [task for _state, task in self._runs.values()]
        if tasks:
            _done, still = await asyncio.wait(tasks, timeout=grace + 1)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=5)
        await self.writer.stop()
        for runner in self._runners.values():
            try:
                await runner.close()
            except Exception:
                log.exception("closing a runner failed")
        self.hub.close()
        await self.store.close()
        self._started = False

    # -- commands ---------------------------------------------------------------------------------
    async def submit_command(
        self,
        command: str | Sequence[str],
        *,
        name: str | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        target: str = "local",
        tags: Sequence[str] = (),
        metadata: Mapping[str, object] | None = None,
        user: str | None = None,
        markers: str = "strict",
        secrets: Sequence[str] = (),
        rerun_of: str | None = None,
        timeout: float | None = None,
    ) -> Execution:
        """Start a command. `timeout`: seconds it may run, then it is stopped (SIGTERM, grace,
        SIGKILL) and fails with reason `timeout`, as a workflow step's timeout does."""
        self._check_open()
        argv: list[str] | None = None
        script: str | None = None
        if isinstance(command, str):
            if not command.strip():
                raise InvalidRequest("the command is empty")
            script = command
            command_text = command
        else:
            if not command:
                raise InvalidRequest("the command is empty")
            argv = list(command)
            command_text = shlex.join(command)
        if markers not in ("strict", "lenient"):
            raise InvalidRequest(f"markers must be 'strict' or 'lenient', not {markers!r}")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                    or not math.isfinite(timeout) or timeout <= 0):
            raise InvalidRequest(f"timeout must be a positive number of seconds, not {timeout!r}")
        self._check_target(target)
        workdir = _expand_home(cwd) if cwd else os.getcwd()
        env_map = {str(k): str(v) for k, v in (env or {}).items()}
        _check_spawnable(command_text, workdir, env_map)
        masker = Masker([env_map.get(k) or os.environ.get(k, "") for k in secrets])
        # what is shown and stored is UTF-8 (bytes that were not: U+FFFD); the process gets the
        # command, directory and environment as given (see engine.surrogates)
        shown = replace_surrogates(command_text)
        execution = Execution(
            id=new_id(),
            name=replace_surrogates(name or _default_name(shown)),
            kind=ExecutionKind.COMMAND,
            command=shown,
            working_directory=replace_surrogates(workdir),
            environment=replace_in(masker.mask_env(env_map)),
            user=replace_surrogates(user or _current_user()),
            tags=replace_in(list(tags)),
            metadata=replace_in(dict(metadata or {})),
            targets=[target],
            rerun_of=rerun_of,
        )
        if markers == "lenient":
            execution.metadata["markers"] = "lenient"
        if timeout is not None:
            # kept with the execution, as markers are, so that a rerun runs with it too
            execution.metadata["timeout"] = timeout
        # a branch's index is negative: the steps (what `total_steps` and `current_step_index`
        # count) are indexed from 0, the branches before them
        branch = Step(id=new_id(), execution_id=execution.id, name=target, kind=StepKind.BRANCH,
                      index=-1, target=target)
        spec = CommandSpec(argv=argv, script=script, env=env_map, cwd=workdir, execution_id=execution.id)
        plan = ExecutionPlan(
            branches=[branch],
            steps=[StepPlan(step=branch, branch=branch, spec=spec, timeout=timeout,
                            lenient_markers=markers == "lenient")],
            is_command=True,
            kill_grace=self.config.kill_grace,
        )
        return await self._launch(execution, [branch], plan, masker)

    async def submit_workflow(
        self,
        path: str | Path | None = None,
        *,
        text: str | None = None,
        targets: Sequence[str] | None = None,
        name: str | None = None,
        user: str | None = None,
        rerun_of: str | None = None,
        done_steps: Mapping[tuple[str, str], str] | None = None,
    ) -> Execution:
        """Validate and start a workflow. `done_steps` maps (target, step name) to the id of the
        execution where that step already completed (rerun from the failed step)."""
        # imported here: the workflow schema (pydantic) is ~0.2 s of a start-up that runs no workflow
        from engine.workflow.load import read_workflow

        self._check_open()
        if text is not None and (bad := unencodable(text)) is not None:
            raise InvalidRequest(f"the workflow text contains a lone surrogate ({bad}), which is not text")
        # in a thread, with a time bound: the API and the TUI hand over documents of any size
        workflow = await read_workflow(path, text=text, known_targets=set(self.config.targets))
        self._check_open()  # again: shutdown may have begun while the thread read
        if targets:
            for target in targets:
                self._check_target(target, workflow)
        execution, steps, plan, masker = plan_workflow(
            workflow, targets, name, user or _current_user(), done_steps or {},
            known_targets=self.config.targets, kill_grace=self.config.kill_grace,
        )
        # every branch's target must be known (to the workflow or the targets file)
        for t in execution.targets:
            self._check_target(t, workflow)
        execution.rerun_of = rerun_of
        # a path or name from the command line may hold bytes that are not UTF-8
        execution.name = replace_surrogates(execution.name)
        execution.command = replace_surrogates(execution.command)
        execution.working_directory = replace_surrogates(execution.working_directory)
        return await self._launch(execution, steps, plan, masker, workflow.targets)

    async def _launch(self, execution: Execution, steps: list[Step], plan: ExecutionPlan,
                      masker: Masker, workflow_targets: Mapping[str, Any] | None = None) -> Execution:
        execution.owner = this_engine()
        execution.admitted_at = utcnow()
        state = ExecutionState(execution, steps, self.hub, masker)
        await self.hub.publish(ExecutionCreated(execution.snapshot(), tuple(s.snapshot() for s in steps)))
        await self.writer.barrier()
        if (not_stored := self.writer.failures.get(execution.id)) is not None:
            raise type(not_stored)(not_stored.message)  # no one shall be told it was accepted
        targets = workflow_targets or {}
        run = ExecutionRun(state, plan, lambda t: self._runner(t, targets), self.artifacts)
        task = asyncio.create_task(self._run_then_forget(run, execution.id), name=f"execution-{execution.id}")
        self._runs[execution.id] = (state, task)
        self._kill_graces[execution.id] = plan.kill_grace
        return execution.snapshot()

    def _not_stored(self, execution_id: str, error: StoreError) -> None:
        """The store writer could not store what the execution did: stop it, failed with that."""
        entry = self._runs.get(execution_id)
        if entry is not None:
            entry[0].request_stop(AbortReason.STOP_ON_ERROR, error.message)

    async def _run_then_forget(self, run: ExecutionRun, execution_id: str) -> None:
        try:
            await run.run()
            # readers fall back to the store once the run is forgotten: it must hold the end first
            await self.writer.barrier()
        finally:
            self._runs.pop(execution_id, None)
            self._kill_graces.pop(execution_id, None)

    async def cancel(self, execution_id: str, reason: AbortReason = AbortReason.USER) -> None:
        entry = self._runs.get(execution_id)
        if entry is None or entry[0].execution.status.is_terminal:
            execution = await self.store.get_execution(execution_id)
            if execution is None:
                raise NotFound(f"no execution {execution_id}")
            raise Conflict(f"execution {execution_id} is {execution.status.value}, not running")
        state, _task = entry
        message = "cancelled by user" if reason is AbortReason.USER else None
        state.request_stop(reason, message)

    async def wait(self, execution_id: str) -> Execution:
        """Wait for a live execution to end and return its final state (for the CLI and tests).
        Raises StoreError (StoreFull) when what it did could not be stored: it is failed, whatever
        its commands did."""
        entry = self._runs.get(execution_id)
        if entry is not None:
            state, task = entry
            await asyncio.shield(task)
            await self.writer.barrier()
            if (not_stored := self.writer.failures.get(execution_id)) is not None:
                raise type(not_stored)(not_stored.message)
            return state.execution.snapshot()
        await self.writer.barrier()
        if (not_stored := self.writer.failures.get(execution_id)) is not None:
            raise type(not_stored)(not_stored.message)
        execution = await self.store.get_execution(execution_id)
        if execution is None:
            raise NotFound(f"no execution {execution_id}")
        return execution

    async def rerun(self, execution_id: str, *, from_failed: bool = False) -> Execution:
        original = await self.get_execution(execution_id)
        if original is None:
            raise NotFound(f"no execution {execution_id}")
        # nothing left to run is refused before anything is created (it made an execution of
        # skipped steps, "completed")
        nothing_left = InvalidRequest(f"nothing to rerun: every step of {execution_id} completed")
        if from_failed and original.status is ExecutionStatus.COMPLETED:
            raise nothing_left
        if original.kind is ExecutionKind.WORKFLOW:
            if not original.workflow_source:
                raise Conflict("this execution has no stored workflow to run again")
            done: dict[tuple[str, str], str] = {}
            if from_failed:
                workflow_steps = [s for s in await self.get_steps(execution_id) if s.kind is StepKind.WORKFLOW]
                for step in workflow_steps:
                    if step.status is StepStatus.COMPLETED or (
                        step.status is StepStatus.SKIPPED and step.metadata.get("completed_in")
                    ):
                        done[(step.target, step.name)] = step.metadata.get("completed_in") or execution_id
                if workflow_steps and len(done) == len(workflow_steps):
                    raise nothing_left
            path = original.command if original.command and original.command != "<workflow>" else None
            return await self.submit_workflow(
                path, text=original.workflow_source, targets=None, name=original.name,
                rerun_of=execution_id, done_steps=done,
            )
        markers = str(original.metadata.get("markers", "strict"))
        timeout = original.metadata.get("timeout")
        meta = {k: v for k, v in original.metadata.items() if k not in ("markers", "timeout")}
        return await self.submit_command(
            original.command, name=original.name, cwd=original.working_directory or None,
            env=original.environment, target=(original.targets or ["local"])[0], tags=original.tags,
            metadata=meta, markers=markers, rerun_of=execution_id,
            timeout=timeout if isinstance(timeout, int | float) and not isinstance(timeout, bool) else None,
        )

    async def cancel_and_delete(self, execution_id: str) -> bool:
        """Delete an execution, cancelling it first when it runs; True when it was cancelled. The
        wait for its processes is bounded by its kill grace (TERM, then KILL after the grace) plus
        slack for the store; past that the deletion is refused (Conflict) rather than leaving a
        run writing into a deleted execution."""
        entry = self._runs.get(execution_id)
        cancelled = False
        if entry is not None:
            state, task = entry
            if not state.execution.status.is_terminal:
                state.request_stop(AbortReason.USER, "cancelled by user")
                cancelled = True
            bound = self._kill_graces.get(execution_id, self.config.kill_grace) + _STOP_SLACK
            try:
                await asyncio.wait_for(asyncio.shield(task), bound)
            except TimeoutError:
                raise Conflict(f"the execution did not stop within {bound:g}s: try again") from None
            await self.writer.barrier()
        await self.delete(execution_id)
        return cancelled

    async def delete(self, execution_id: str) -> None:
        if execution_id in self._runs:
            raise Conflict("the execution is still running: cancel it first")
        execution = await self.store.get_execution(execution_id)
        if execution is None:
            raise NotFound(f"no execution {execution_id}")
        if not execution.status.is_terminal:
            raise Conflict(f"the execution is {execution.status.value}: cancel it first")
        await self.hub.publish(ExecutionDeleted(execution_id))
        await self.writer.barrier()
        await self.artifacts.remove_execution(execution_id)

    # -- artifacts (API uploads) -----------------------------------------------------------------
    async def add_artifact(
        self,
        execution_id: str,
        *,
        name: str,
        file_name: str,
        data: bytes,
        step_id: str | None = None,
        description: str = "",
        artifact_type: ArtifactType | None = None,
        tags: Sequence[str] = (),
    ) -> Artifact:
        if await self.get_execution(execution_id) is None:
            raise NotFound(f"no execution {execution_id}")
        if step_id is not None and not any(s.id == step_id for s in await self.get_steps(execution_id)):
            raise NotFound(f"no step {step_id} in execution {execution_id}")
        artifact = await self.artifacts.save_bytes(
            execution_id=execution_id, step_id=step_id, name=name, file_name=file_name, data=data,
            description=description, artifact_type=artifact_type, tags=list(tags),
        )
        await self.hub.publish(ArtifactAdded(artifact))
        await self.writer.barrier()
        return artifact

    async def get_artifact(self, artifact_id: str) -> Artifact | None:
        artifact = await self.store.get_artifact(artifact_id)
        if artifact is None and self._runs:
            # told by an ArtifactAdded event that the store writer has not committed yet: once it
            # has written what was published so far, the store has every artifact anyone was told of
            await self.writer.barrier()
            artifact = await self.store.get_artifact(artifact_id)
        return artifact

    def artifact_path(self, artifact: Artifact) -> Path:
        return self.artifacts.path_of(artifact)

    async def read_artifact(self, artifact_id: str) -> bytes:
        artifact = await self.get_artifact(artifact_id)
        if artifact is None:
            raise NotFound(f"no artifact {artifact_id}")
        path = self.artifacts.path_of(artifact)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise NotFound(f"the file of artifact {artifact_id} is missing") from None

    async def delete_artifact(self, artifact_id: str) -> None:
        artifact = await self.store.get_artifact(artifact_id)
        if artifact is None:
            raise NotFound(f"no artifact {artifact_id}")
        await self.hub.publish(ArtifactDeleted(exec_id=artifact.execution_id, artifact_id=artifact_id))
        await self.writer.barrier()
        await self.artifacts.remove(artifact)

    # -- reads ------------------------------------------------------------------------------------
    def is_live(self, execution_id: str) -> bool:
        return execution_id in self._runs

    @property
    def running_count(self) -> int:
        return len(self._runs)

    async def list_executions(self, flt: ExecutionFilter) -> tuple[list[Execution], int]:
        return await self.store.list_executions(flt)

    async def get_execution(self, execution_id: str) -> Execution | None:
        entry = self._runs.get(execution_id)
        if entry is not None:
            return entry[0].execution.snapshot()
        return await self.store.get_execution(execution_id)

    async def resolve_execution_id(self, prefix: str) -> str:
        if prefix in self._runs:
            return prefix
        matches = await self.store.resolve_execution_id(prefix)
        if not matches:
            raise NotFound(f"no execution with id {prefix!r}")
        if len(matches) > 1 and prefix not in matches:
            raise InvalidRequest(f"{prefix!r} is ambiguous: {', '.join(m[:12] for m in matches[:5])}")
        return prefix if prefix in matches else matches[0]

    async def get_steps(self, execution_id: str) -> list[Step]:
        entry = self._runs.get(execution_id)
        if entry is None:
            return await self.store.get_steps(execution_id)
        # the live state holds the open steps and the finished ones the store may not hold yet; a
        # finished marker step leaves it only once stored. Copied before the store is read, so a
        # step that leaves meanwhile is in what the read sees.
        live = {s.id: s.snapshot() for s in entry[0].steps.values()}
        stored = await self.store.get_steps(execution_id)
        merged = [live.pop(s.id, s) for s in stored]
        merged += live.values()
        merged.sort(key=lambda s: s.index)
        return merged

    async def list_artifacts(self, flt: ArtifactFilter) -> tuple[list[Artifact], int]:
        return await self.store.list_artifacts(flt)

    async def get_log_lines(
        self,
        execution_id: str,
        *,
        step_ids: Sequence[str] | None = None,
        after_seq: int = -1,
        before_seq: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
        offset: int = 0,
    ) -> list[LogLine]:
        return await self.store.get_log_lines(
            execution_id, step_ids=step_ids, after_seq=after_seq, before_seq=before_seq,
            limit=limit, newest_first=newest_first, offset=offset,
        )

    async def count_log_lines(self, execution_id: str, *, step_ids: Sequence[str] | None = None) -> int:
        return await self.store.count_log_lines(execution_id, step_ids=step_ids)

    async def stats(self) -> StoreStats:
        return await self.store.stats()

    async def optimize(self) -> list[str]:
        await self.writer.barrier()
        return await self.store.optimize()

    def subscribe(self, *, maxsize: int = 10_000) -> Subscriber:
        return self.hub.subscribe(maxsize)

    # -- helpers ----------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closing:
            raise ShuttingDown("the engine is shutting down and takes no new work")
        if not self._started:
            raise ShuttingDown("the engine is not started")

    def _check_target(self, target: str, workflow: Workflow | None = None) -> None:
        if target == "local" or target in self.config.targets:
            return
        if workflow is not None and target in workflow.targets:
            return
        known = sorted({"local", *self.config.targets, *(workflow.targets if workflow else {})})
        raise InvalidRequest(f"unknown target {target!r} (known: {', '.join(known)})")

    def _runner(self, target: str, workflow_targets: Mapping[str, Any]) -> Runner:
        config = workflow_targets.get(target) or self.config.targets.get(target)
        key = f"{target}:{config!r}"
        runner = self._runners.get(key)
        if runner is None:
            runner = self._runner_factory(target, config)
            self._runners[key] = runner
        return runner


def owner_alive(owner: str | None) -> bool:
    return owner == this_engine() or owner_is_alive(owner)


async def mark_lost(store: Store) -> list[str]:
    """Mark what a dead engine left running as failed ("engine lost"), and stop the processes
    those executions left running here (when the dead engine's watchdog could not). Waits at most
    a second or so, and only when such processes are found. Returns the lost executions' ids."""
    from engine.runners.orphans import stop_lost_processes

    lost = await store.mark_lost(owner_alive)
    if lost:
        log.warning("marked %d execution(s) left running by a dead engine as failed", len(lost))
        await stop_lost_processes(lost)
    return lost


def _default_runner_factory(target: str, config: Any) -> Runner:
    if config is None or getattr(config, "type", "local") == "local":
        from engine.runners.local import LocalRunner

        return LocalRunner()
    try:
        from engine.runners.targets import runner_for
    except ImportError as exc:  # pragma: no cover - until remote runners land
        raise RuntimeError(f"target type {config.type!r} is not supported yet") from exc
    return runner_for(config)


def _default_name(command: str) -> str:
    first = command.strip().splitlines()[0] if command.strip() else "command"
    return first if len(first) <= 60 else first[:57] + "..."


def _current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return os.environ.get("USER", "")


def _check_spawnable(command: str, cwd: str, env: Mapping[str, str]) -> None:
    """Refuse, before anything is created, what no process can be started with (it failed later as
    "internal error: embedded null byte", and over SSH it broke the shared connection)."""
    for what, text in (("the command", command), ("the working directory", cwd)):
        if "\x00" in text:
            raise InvalidRequest(f"{what} contains a NUL character")
        if (bad := unencodable(text)) is not None:
            raise InvalidRequest(f"{what} contains a lone surrogate ({bad}), which no process can be given")
    for key, value in env.items():
        if problem := env_name_problem(key):
            raise InvalidRequest(f"environment: {problem}")
        if "\x00" in value:
            raise InvalidRequest(f"environment: the value of {key} contains a NUL character")
        if (bad := unencodable(value)) is not None:
            raise InvalidRequest(f"environment: the value of {replace_surrogates(key)} contains a lone "
                                 f"surrogate ({bad}), which no process can be given")


def _expand_home(path: str) -> str:
    """`~/x` → the home folder's x (no file system access, so fine on the event loop)."""
    if path == "~" or path.startswith("~/"):
        return os.environ.get("HOME", "~") + path[1:]
    return path
