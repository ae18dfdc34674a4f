"""The embedded aiohttp listener: every documented API on one port (StepFlow Monitor first), the
Monitor WebSocket also on its own port. A client of the engine; never imports the TUI."""

from api_compat.app import create_app, create_ws_app
from api_compat.auth import AuthError, create_token, revoke_token, token_id
from api_compat.config import ApiConfig, ConfigError
from api_compat.listener import ApiListener, ListenerError
from api_compat.serve import serve

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
