"""The store writer: drains the hub's sink and applies events in batches, one transaction each.

A batch is whatever has accumulated while the previous transaction ran (bounded by line count), so
a quiet engine writes each event at once and a busy one writes thousands of lines per transaction.

A batch is never dropped in silence. One the store refuses is tried once more (another process may
have held the file too long), then execution by execution: what can be written is, and each
execution whose events cannot be is failed, loudly (its status "failed" with "could not be stored:
…" where the store can still say so, an error in the log, and the engine stops its commands:
see `on_failed`). A full disk fails every execution of the batch the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence

from engine.errors import StoreError, StoreFull
from engine.events import Event, LinesLogged
from engine.hub import Bundle, Sink
from engine.store import Store

log = logging.getLogger(__name__)

#: a batch's lines at most: half of what may be uncommitted (engine.hub.MAX_UNCOMMITTED_LINES), so
#: the commands' output goes on queueing while a batch is written
MAX_BATCH_LINES = 10_000
MAX_BATCH_EVENTS = 4_000
#: how long a small batch may wait for more events before it is written
#: (DESIGN.md: one transaction per ~100 ms or ~1,000 lines). A transaction costs a dozen round trips
#: to SQLite's thread: in bench/dispatch.py, 50 ms took ~0.2 ms more engine CPU per step than 250 ms.
LINGER = 0.1
LINGER_LINES = 1_000
LINGER_EVENTS = 1_000


class StoreWriter:
    def __init__(self, store: Store, sink: Sink) -> None:
        self._store = store
        self._sink = sink
        self._task: asyncio.Task[None] | None = None
        self.applied_events = 0
        self.failed_batches = 0
        self._linger_until: float | None = None
        #: executions whose events could not be stored, and why (the engine raises a copy to callers)
        self.failures: dict[str, StoreError] = {}
        #: what the engine does with an execution that cannot be stored (stop its commands)
        self.on_failed: Callable[[str, StoreError], None] | None = None
        #: set while the disk is full (the message: "no space left for the store at PATH")
        self.full: str | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="store-writer")

    async def barrier(self) -> None:
        """Return when every event published before this call is in the store."""
        if self._task is None:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._sink.put(fut)
        await fut

    async def stored(self, execution_id: str) -> None:
        """`barrier`, then raise (a copy of) the error that kept the execution's events from the
        store, if any: what a caller is told must not be what the store lost."""
        await self.barrier()
        if (not_stored := self.failures.get(execution_id)) is not None:
            raise type(not_stored)(not_stored.message)

    async def stop(self) -> None:
        if self._task is None:
            return
        await self.barrier()
        task, self._task = self._task, None
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        # whatever came after the last barrier can no longer be written; nobody may wait on it
        dropped = 0
        while not self._sink.empty():
            item = self._sink.get_nowait()
            if isinstance(item, asyncio.Future):
                if not item.done():
                    item.set_result(None)
            else:
                dropped += len(item) if isinstance(item, Bundle) else 1
        self._sink.committed(self._sink.uncommitted_lines)  # nobody waits for room any more
        if dropped:
            log.warning("%d event(s) published after the store writer stopped were not written", dropped)

    async def _run(self) -> None:
        while True:
            first = await self._sink.get()
            self._linger_until = None
            batch: list[Event] = []
            barriers: list[asyncio.Future[None]] = []
            lines = 0
            item: Event | Bundle | asyncio.Future[None] | None = first
            while item is not None:
                if isinstance(item, asyncio.Future):
                    barriers.append(item)
                elif isinstance(item, Bundle):
                    batch.extend(item)
                    lines += item.lines
                else:
                    batch.append(item)
                    if isinstance(item, LinesLogged):
                        lines += len(item.lines)
                if lines >= MAX_BATCH_LINES or len(batch) >= MAX_BATCH_EVENTS:
                    break
                try:
                    item = self._sink.get_nowait()
                except asyncio.QueueEmpty:
                    item = await self._linger(batch, barriers, lines)
            if batch:
                try:
                    await self._apply(batch)
                finally:
                    self._sink.committed(lines)
            for fut in barriers:
                if not fut.done():
                    fut.set_result(None)

    async def _linger(self, batch: list[Event], barriers: list[asyncio.Future[None]],
                      lines: int) -> Event | Bundle | asyncio.Future[None] | None:
        """A small batch waits up to LINGER seconds for company: a quiet engine then writes a few
        transactions a second instead of one per event (a step's start and end, its counters...).
        Nobody waits on it: a barrier (someone awaiting the store) ends the wait at once. The
        writer sleeps meanwhile, woken by the sink (see `Sink.wait_for_company`) rather than by
        each event: a step of a workflow publishes several."""
        if barriers or not batch or lines >= LINGER_LINES or len(batch) >= LINGER_EVENTS:
            return None
        loop = asyncio.get_running_loop()
        if self._linger_until is None:
            self._linger_until = loop.time() + LINGER
        if loop.time() >= self._linger_until:
            self._linger_until = None
            return None
        sink = self._sink
        woken: asyncio.Future[None] = loop.create_future()
        sink.wait_for_company(woken, LINGER_EVENTS - len(batch), LINGER_LINES - lines)
        timer = loop.call_at(self._linger_until, _wake, woken)
        try:
            await woken
        finally:
            timer.cancel()
            sink.waiter = None
        try:
            return sink.get_nowait()
        except asyncio.QueueEmpty:  # the time is up and nothing came
            self._linger_until = None
            return None

    async def _apply(self, batch: list[Event]) -> None:
        # the events of executions already failed go on their own: they may fail again
        failed = self.failures
        doomed = [e for e in batch if e.execution_id in failed] if failed else []
        if doomed:
            batch = [e for e in batch if e.execution_id not in failed]
            await self._write_last_words(doomed)
        if not batch:
            return
        for attempt in (1, 2):
            try:
                refused = await self._store.apply(batch)
            except asyncio.CancelledError:
                raise
            except StoreFull as exc:
                self._disk_full(batch, exc)
                return
            except Exception as exc:
                log.log(logging.DEBUG if attempt == 1 else logging.WARNING,
                        "writing %d events to the store failed (attempt %d of 2, then execution by execution): %s",
                        len(batch), attempt, _cause(exc), exc_info=log.isEnabledFor(logging.DEBUG))
                continue
            self.applied_events += len(batch)
            if self.full is not None:
                log.warning("the store has room again")
                self.full = None
            await self._refused(refused)
            return
        self.failed_batches += 1
        await self._apply_by_execution(batch)

    async def _apply_by_execution(self, batch: list[Event]) -> None:
        """The batch that failed twice, one transaction per execution: the executions whose events
        cannot be written are failed, the others' are kept."""
        groups: dict[str, list[Event]] = {}
        for event in batch:
            groups.setdefault(event.execution_id, []).append(event)
        for execution_id, events in groups.items():
            try:
                refused = await self._store.apply(events)
            except asyncio.CancelledError:
                raise
            except StoreFull as exc:
                self._disk_full(events, exc)
            except Exception as exc:
                log.debug("the events of execution %s could not be stored", execution_id, exc_info=True)
                self._fail(execution_id, StoreError(f"could not be stored: {_cause(exc)}"))
                await self._write_failure(execution_id)
            else:
                self.applied_events += len(events)
                await self._refused(refused)

    async def _refused(self, refused: Mapping[str, str] | None) -> None:
        """Rows the store skipped (the rest of their batch was written): their executions failed."""
        for execution_id, why in (refused or {}).items():
            if execution_id not in self.failures:
                self._fail(execution_id, StoreError(f"could not be stored: {why}"))
                await self._write_failure(execution_id)

    async def _write_last_words(self, events: Sequence[Event]) -> None:
        """Events of executions already failed: their end, say, which may still be storable."""
        try:
            await self._store.apply(events)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("%d more event(s) of failed execution(s) could not be stored: %s", len(events), _cause(exc))
        else:
            self.applied_events += len(events)

    async def _write_failure(self, execution_id: str) -> None:
        """The failure alone, where the rest could not go (a row that exists can change status)."""
        try:
            await self._store.fail_execution(execution_id, self.failures[execution_id].message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("the failure of execution %s could not be stored either: %s", execution_id, _cause(exc))

    def _disk_full(self, events: Sequence[Event], exc: StoreFull) -> None:
        if self.full is None:
            # one line, once (the CLI says it in its own words: see extra)
            log.error("%s: the executions writing to it are failed", exc.message, extra={"store_full": True})
        self.full = exc.message
        for execution_id in dict.fromkeys(e.execution_id for e in events):
            self._fail(execution_id, exc)

    def _fail(self, execution_id: str, error: StoreError) -> None:
        if execution_id in self.failures:
            return
        self.failures[execution_id] = error
        if not isinstance(error, StoreFull):
            log.error("execution %s is failed: its events %s", execution_id, error.message)
        if self.on_failed is not None:
            self.on_failed(execution_id, error)


def _cause(exc: BaseException) -> str:
    """The database's own words, without the statement and its parameters a wrapper adds."""
    cause = getattr(exc, "orig", None) or exc
    return str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
