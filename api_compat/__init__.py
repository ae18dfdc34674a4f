"""The embedded aiohttp listener: every documented API on one port (StepFlow Monitor first), the
Monitor WebSocket also on its own port. A client of the engine; never imports the TUI.

The names below load their modules when first used: importing a client of an API
(`api_compat.monitor.client`) does not load the server."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from api_compat.app import create_app, create_ws_app
    from api_compat.auth import AuthError, create_token, revoke_token, token_id
    from api_compat.config import ApiConfig, ConfigError
    from api_compat.listener import ApiListener, ListenerError
    from api_compat.serve import serve

_WHERE = {
    "create_app": "api_compat.app",
    "create_ws_app": "api_compat.app",
    "AuthError": "api_compat.auth",
    "create_token": "api_compat.auth",
    "revoke_token": "api_compat.auth",
    "token_id": "api_compat.auth",
    "ApiConfig": "api_compat.config",
    "ConfigError": "api_compat.config",
    "ApiListener": "api_compat.listener",
    "ListenerError": "api_compat.listener",
    "serve": "api_compat.serve",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'api_compat' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "ApiConfig",
    "ApiListener",
    "AuthError",
    "ConfigError",
    "ListenerError",
    "create_app",
    "create_token",
    "create_ws_app",
    "revoke_token",
    "serve",
    "token_id",
]
