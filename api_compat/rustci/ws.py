"""`/api/runners/ws`: every client gets `runner_status_change` and the jobs' `job_started` and
`job_completed` messages of every runner (JSON objects with `type`, `runner_id`, `timestamp`)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from api_compat.ws_fanout import FanoutHub, WsClient
from api_compat.ws_queue import frame


class RunnerHub(FanoutHub):
    def on_open(self, client: WsClient, request: web.Request) -> None:
        client.send(frame(json.dumps({"type": "connection_established"})))

    def publish(self, message: dict[str, Any]) -> None:
        self.broadcast(json.dumps(message))
