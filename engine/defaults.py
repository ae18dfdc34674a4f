"""Defaults of the engine that its clients show before they build one (`stepflow --help` prints
them): here, apart, so that showing them imports nothing of the engine."""

from __future__ import annotations

#: executions an engine runs at once unless told otherwise (EngineConfig.max_running)
DEFAULT_MAX_RUNNING = 32
