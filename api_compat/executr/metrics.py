"""executr's Prometheus metrics, under the reference's names, in a registry of the application's
own (never the process-wide default: two listeners in one process, tests, each count their own).
Queue depth is read from the store when scraped; counters and histograms move as requests come."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from engine.store import QueueCount

#: seconds, 5 ms to about 80 min
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4800)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class JobMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.submitted = Counter("executr_jobs_submitted", "Total number of jobs submitted",
                                 ["type", "priority"], registry=r)
        self.completed = Counter("executr_jobs_completed", "Total number of jobs completed successfully",
                                 ["type", "priority", "executor"], registry=r)
        self.failed = Counter("executr_jobs_failed", "Total number of jobs failed",
                              ["type", "priority", "executor"], registry=r)
        self.cancelled = Counter("executr_jobs_cancelled", "Total number of jobs cancelled", registry=r)
        self.duration = Histogram("executr_job_duration_seconds", "Job execution duration in seconds",
                                  ["type", "priority", "status"], buckets=_BUCKETS, registry=r)
        self.wait_time = Histogram("executr_job_wait_time_seconds", "Time jobs spend waiting to be executed",
                                   ["type", "priority"], buckets=_BUCKETS, registry=r)
        self.claim_latency = Histogram("executr_claim_duration_seconds",
                                       "Time a claim request takes to answer (without its long-poll wait)",
                                       buckets=_BUCKETS, registry=r)
        self.in_queue = Gauge("executr_jobs_in_queue", "Number of jobs currently in queue",
                              ["status", "priority"], registry=r)
        self.executors_active = Gauge("executr_executors_active", "Number of active executors", registry=r)
        self.heartbeats = Counter("executr_executor_heartbeats", "Total number of heartbeats received from executors",
                                  ["executor"], registry=r)
        self.claimed = Counter("executr_executor_jobs_claimed", "Total number of jobs claimed by executors",
                               ["executor"], registry=r)
        self.stale_recovered = Counter("executr_stale_jobs_recovered", "Total number of stale jobs recovered",
                                       registry=r)

    def set_queue(self, counts: list[QueueCount], priority_name: dict[int, str], executors: int) -> None:
        self.in_queue.clear()
        for status in ("pending", "running", "completed", "failed", "cancelled"):
            for name in priority_name.values():
                self.in_queue.labels(status, name).set(0)
        for c in counts:
            name = priority_name.get(c.priority, str(c.priority))
            self.in_queue.labels(c.status.value, name).inc(c.count)
        self.executors_active.set(executors)

    def render(self) -> bytes:
        return generate_latest(self.registry)
