"""Targets: registry entries of kind `target` with integer ids and serials `T<year><n:04>`, given in
the transaction that inserts them. Those of the engine's targets file (SSH hosts, Docker images) and
`local` are imported at start, by name: a name keeps its id and serial across restarts. Ours (the
document reads targets, it does not create them): `POST/GET/PATCH/DELETE /api/targets`. A target
with pending or running branches cannot be deleted (409). A target's name does not change."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from api_compat.opsconductor import serials
from api_compat.opsconductor.errors import OpsError, describe_validation
from api_compat.opsconductor.keys import STORE, OpsStore
from api_compat.opsconductor.paging import page_of, pagination
from api_compat.opsconductor.wire import TargetCreate, TargetFields, target_json
from api_compat.request_parsing import read_json_body
from engine.errors import Conflict
from engine.model import utcnow
from engine.store import RegistryEntry, Serial
from engine.store.opsconductor import TARGET_KIND
from engine.workflow.schema import TargetModel

log = logging.getLogger(__name__)
LOCAL = "local"
_TARGET_CONFIG: TypeAdapter[Any] = TypeAdapter(TargetModel)
#: fields of a target's config (what a workflow's `targets:` holds) a body may set
_CONFIG_FIELDS = ("host", "port", "user", "key", "known_hosts", "password_env", "connect_timeout", "image",
                  "docker_host")


def store_of(request: web.Request) -> OpsStore:
    store = request.app[STORE]
    if store is None:
        raise OpsError(503, "this server's engine keeps no OpsConductor records")
    return store


def target_serial() -> Serial:
    year = utcnow().year
    return Serial(f"opsconductor.targets.{year}", f"T{year}{{:04d}}")


# -- the targets file ------------------------------------------------------------------------------------
def _file_data(name: str, target: Any) -> dict[str, Any]:
    kind = getattr(target, "type", "local")
    host = getattr(target, "host", None)
    return {"type": kind, "host": host, "port": getattr(target, "port", None), "user": getattr(target, "user", None),
            "ip_address": host if kind == "ssh" else ("127.0.0.1" if kind == "local" else None),
            "image": getattr(target, "image", None), "source": "file"}


async def import_file_targets(store: OpsStore, targets: Mapping[str, Any]) -> None:
    """The targets file's targets, then `local`: registered if new, their fields brought up to date
    if not (same id, same serial)."""
    wanted = {name: target for name, target in targets.items() if name != LOCAL}
    wanted[LOCAL] = None
    for name, target in wanted.items():
        data = _file_data(name, target)
        existing = await store.get_registered(TARGET_KIND, name=name)
        if existing is None:
            try:
                await store.register(TARGET_KIND, name, data, serial=target_serial())
            except Conflict:
                pass  # another server on this store registered it at the same moment
        elif existing.data.get("source") == "file":
            if any(existing.data.get(k) != v for k, v in data.items()):
                await store.update_registered(TARGET_KIND, existing.id, data)
        else:
            log.warning("target %r of the targets file has the name of a target created over the API: "
                        "the API's is kept", name)


def workflow_target(entry: RegistryEntry, file_targets: Mapping[str, Any]) -> dict[str, Any] | None:
    """What a workflow's `targets:` says of this target; None: refer to it by name (`local`, or a
    target of the engine's targets file). OpsError (422) when it is gone from the file."""
    data = entry.data
    if data.get("source") == "file":
        if entry.name == LOCAL or entry.name in file_targets:
            return None
        raise OpsError(422, f"target {entry.name!r} ({entry.serial}) is no longer in the targets file",
                       {"field": "target_ids", "received": entry.id})
    if entry.name == LOCAL:
        return None
    config = data.get("config")
    return dict(config) if isinstance(config, dict) else {"type": "local"}


# -- routes ------------------------------------------------------------------------------------------------
def _config(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The workflow config of a target's fields, validated as a workflow's `targets:` entry."""
    kind = fields.get("type") or "ssh"
    config: dict[str, Any] = {"type": kind}
    if kind == "ssh":
        host = fields.get("host") or fields.get("ip_address")
        if not host:
            raise OpsError(422, "an ssh target needs a host (or an ip_address)", {"field": "host"})
        config["host"] = host
        for key in ("port", "user", "key", "known_hosts", "password_env", "connect_timeout"):
            if fields.get(key) is not None:
                config[key] = fields[key]
    elif kind == "docker":
        if not fields.get("image"):
            raise OpsError(422, "a docker target needs an image", {"field": "image"})
        config["image"] = fields["image"]
        if fields.get("docker_host"):
            config["docker_host"] = fields["docker_host"]
    try:
        _TARGET_CONFIG.validate_python(config, strict=True)
    except ValidationError as exc:
        raise describe_validation(exc) from None
    return config


def _data(fields: Mapping[str, Any]) -> dict[str, Any]:
    config = _config(fields)
    return {"type": config["type"], "host": config.get("host"), "port": fields.get("port"),
            "user": fields.get("user"), "ip_address": fields.get("ip_address") or config.get("host"),
            "image": config.get("image"), "source": "api", "config": config}


async def find_target(request: web.Request, raw: str) -> RegistryEntry:
    """A target by its id or its serial; 404 when there is none."""
    store = store_of(request)
    if raw.isdigit() and len(raw) < 19:
        entry = await store.get_registered(TARGET_KIND, id=int(raw))
    else:
        entry = await store.get_registered(TARGET_KIND, serial=serials.TARGET.check(raw, field="target_id"))
    if entry is None:
        raise OpsError(404, f"no target {raw}")
    return entry


async def create_target(request: web.Request) -> web.Response:
    body = TargetCreate.validate_python(await read_json_body(request, error=OpsError))
    store = store_of(request)
    try:
        entry = await store.register(TARGET_KIND, body.name, _data(body.model_dump()), serial=target_serial())
    except Conflict as exc:
        raise OpsError(409, exc.message, {"field": "name", "received": body.name}) from None
    return web.json_response(target_json(entry), status=201)


async def list_targets(request: web.Request) -> web.Response:
    page, per_page = page_of(request)
    entries, total = await store_of(request).list_registered(TARGET_KIND, limit=per_page,
                                                             offset=(page - 1) * per_page)
    return web.json_response({"data": [target_json(e) for e in entries],
                              "pagination": pagination(page, per_page, total)})


async def get_target(request: web.Request) -> web.Response:
    return web.json_response(target_json(await find_target(request, request.match_info["target_id"])))


async def update_target(request: web.Request) -> web.Response:
    entry = await find_target(request, request.match_info["target_id"])
    raw = await read_json_body(request, error=OpsError)
    if isinstance(raw, dict) and "name" in raw and raw["name"] != entry.name:
        raise OpsError(422, "a target's name does not change (create another target)", {"field": "name"})
    if isinstance(raw, dict) and "type" in raw and raw["type"] != entry.data.get("type"):
        raise OpsError(422, "a target's type does not change (create another target)", {"field": "type"})
    patch = TargetFields.model_validate(raw).model_dump(exclude_unset=True)
    if entry.data.get("source") == "file":
        raise OpsError(409, f"target {entry.name!r} comes from the targets file: change it there")
    merged = {**entry.data, **{k: v for k, v in (entry.data.get("config") or {}).items() if k in _CONFIG_FIELDS},
              **patch}
    updated = await store_of(request).update_registered(TARGET_KIND, entry.id, _data(merged))
    if updated is None:
        raise OpsError(404, f"no target {entry.id}")
    return web.json_response(target_json(updated))


async def delete_target(request: web.Request) -> web.Response:
    entry = await find_target(request, request.match_info["target_id"])
    deleted = await store_of(request).delete_idle_target(entry.id)
    if deleted is None:
        raise OpsError(404, f"no target {entry.id}")
    if not deleted:
        raise OpsError(409, f"target {entry.name!r} ({entry.serial}) has pending or running branches: "
                            "wait for them to end, or cancel their executions")
    return web.Response(status=204)
