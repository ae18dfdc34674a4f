"""SQLAlchemy's asyncio engine, without the ORM its package imports.

`sqlalchemy.ext.asyncio`'s `__init__` imports its AsyncSession, and with it the whole ORM: measured
here, 264M instructions (~60 ms) of the ~1.8G of a `stepflow exec -- true`, for a class the store
never uses (it works on connections: storage.connections, storage.writes). So the package is put in
`sys.modules` before its `__init__` has run, and its `engine` module, which needs nothing of the ORM,
is imported under it. The first time anyone asks the package for anything else
(`sqlalchemy.ext.asyncio.AsyncSession`, `from sqlalchemy.ext.asyncio import async_sessionmaker`),
its `__init__` runs, once, as the import would have run it: the modules already imported are reused,
so every class is the one object it always is.

When something imported the package already (a test, an embedder), it is used as it is.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

_PACKAGE = "sqlalchemy.ext.asyncio"


def _install_package_not_run_yet() -> None:
    if _PACKAGE in sys.modules:
        return
    import sqlalchemy.ext

    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or spec.loader is None:  # pragma: no cover - SQLAlchemy without its asyncio part
        raise ImportError(f"no module named {_PACKAGE!r}")
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader
    #: while its engine module is imported (`from . import exc` asks the package for `exc` first)
    importing = True

    def __getattr__(name: str) -> Any:
        if importing:
            raise AttributeError(name)
        # the rest of the package: run its __init__ now (once), then answer as it would
        if package.__dict__.pop("__getattr__", None) is not None:
            loader.exec_module(package)
        try:
            return package.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {_PACKAGE!r} has no attribute {name!r}") from None

    package.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[_PACKAGE] = package
    sqlalchemy.ext.asyncio = package
    try:
        importlib.import_module(f"{_PACKAGE}.engine")
    except BaseException:
        del sys.modules[_PACKAGE]
        raise
    finally:
        importing = False


_install_package_not_run_yet()

from sqlalchemy.ext.asyncio.engine import AsyncConnection, AsyncEngine, create_async_engine  # noqa: E402

__all__ = ["AsyncConnection", "AsyncEngine", "create_async_engine"]
