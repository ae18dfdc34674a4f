"""Artifacts: list with filters, detail, download, multipart upload (capped), delete."""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from pydantic import ValidationError

from api_compat.monitor.envelope import ApiError, found, ok, page
from api_compat.monitor.errors import describe_validation, read_query
from api_compat.monitor.schemas import ListArtifactsQuery, UploadForm
from api_compat.monitor.wire import artifact_dict
from api_compat.request_parsing import InvalidJson, parse_json
from api_compat.state import CONFIG, ENGINE
from engine.model import Artifact, ArtifactFilter

#: multipart framing and the small text fields, beyond the file itself
_FORM_OVERHEAD = 64 * 1024
_TEXT_FIELD_MAX = 64 * 1024


async def _existing(request: web.Request) -> Artifact:
    artifact_id = request.match_info["artifact_id"]
    return found(await request.app[ENGINE].get_artifact(artifact_id), "artifact", artifact_id)


async def list_artifacts(request: web.Request) -> web.Response:
    q = read_query(request, ListArtifactsQuery)
    flt = ArtifactFilter(execution_id=q.execution_id, step_id=q.step_id, artifact_type=q.artifact_type,
                         limit=q.limit, offset=q.offset)
    artifacts, total = await request.app[ENGINE].list_artifacts(flt)
    return ok(page("artifacts", [artifact_dict(a) for a in artifacts], total, q.offset))


async def get_artifact(request: web.Request) -> web.Response:
    return ok({"artifact": artifact_dict(await _existing(request))})


def content_disposition(file_name: str) -> str:
    ascii_name = file_name.encode("ascii", "replace").decode().replace('"', "_").replace("\\", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(file_name)}"


async def download_artifact(request: web.Request) -> web.StreamResponse:
    artifact = await _existing(request)
    path = request.app[ENGINE].artifact_path(artifact)
    if not path.is_file():
        raise ApiError(404, f"the file of artifact {artifact.id} is missing from the artifact store")
    return web.FileResponse(path, headers={
        "Content-Type": artifact.mime_type or "application/octet-stream",
        "Content-Disposition": content_disposition(artifact.file_name),
    })


def check_file_name(name: str | None) -> str:
    """The uploaded file's name, refused when it names a path rather than a file."""
    if not name or not name.strip():
        raise ApiError(400, "the 'file' part needs a file name")
    if "/" in name or "\\" in name or "\x00" in name or name in (".", "..") or name.startswith(".."):
        raise ApiError(400, f"invalid file name {name!r}: it must be a plain file name, not a path")
    if len(name) > 255:
        raise ApiError(400, "the file name is longer than 255 characters")
    return name


def _tags(values: list[str]) -> list[str]:
    if len(values) == 1:
        raw = values[0].strip()
        if raw.startswith("["):
            try:
                parsed = parse_json(raw)
            except InvalidJson as exc:
                raise ApiError(400, f"tags: not a valid JSON array: {exc}") from None
            if not isinstance(parsed, list) or not all(isinstance(t, str) for t in parsed):
                raise ApiError(400, "tags: must be an array of strings")
            return parsed
        return [t.strip() for t in raw.split(",") if t.strip()]
    return values


async def _read_capped(part: BodyPartReader, cap: int, what: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(256 * 1024):
        size += len(chunk)
        if size > cap:
            raise ApiError(413, f"{what} is larger than the limit of {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_form(reader: MultipartReader, cap: int) -> tuple[dict[str, list[str]], str | None, bytes | None]:
    """The text fields (every value given), the file's name and its bytes (None: no file part)."""
    fields: dict[str, list[str]] = {}
    file_name: str | None = None
    data: bytes | None = None
    text_size = 0
    while True:
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            raise ApiError(400, "nested multipart bodies are not accepted")
        if part.name == "file":
            if data is not None:
                raise ApiError(400, "file: give exactly one file")
            file_name = check_file_name(part.filename)
            data = await _read_capped(part, cap, "the file")
        elif part.name:
            raw = await _read_capped(part, _TEXT_FIELD_MAX, f"the field {part.name!r}")
            # together too: without a Content-Length, a stream of fields is otherwise never refused
            text_size += len(raw)
            if text_size > _FORM_OVERHEAD:
                raise ApiError(413, f"the form's fields are larger than the limit of {_FORM_OVERHEAD} bytes together")
            try:
                fields.setdefault(part.name, []).append(raw.decode())
            except UnicodeDecodeError:
                raise ApiError(400, f"{part.name}: not UTF-8 text") from None
    return fields, file_name, data


async def upload_artifact(request: web.Request) -> web.Response:
    cap = request.app[CONFIG].max_upload_bytes
    if request.content_length is not None and request.content_length > cap + _FORM_OVERHEAD:
        raise ApiError(413, f"the upload is larger than the limit of {cap} bytes")
    if not request.content_type.startswith("multipart/form-data"):
        raise ApiError(400, "send the artifact as multipart/form-data")
    try:
        reader = await request.multipart()
        fields, file_name, data = await _read_form(reader, cap)
    except RequestPayloadError:
        # the whole body's Content-Encoding does not decode
        raise ApiError(400, "the multipart body cannot be read: it is not what its Content-Encoding says") from None
    except (ValueError, AssertionError, HttpProcessingError) as exc:
        # aiohttp's parser: no starting boundary, a body cut short, a garbled part header
        raise ApiError(400, f"the multipart body cannot be read: {exc}") from None
    if data is None or file_name is None:
        raise ApiError(400, "file: field required")
    values: dict[str, object] = {}
    for key, vals in fields.items():
        if key == "tags":
            values[key] = _tags(vals)
        elif len(vals) > 1:
            raise ApiError(400, f"{key}: given more than once")
        else:
            values[key] = vals[0]
    for key in ("step_id", "artifact_type"):
        if values.get(key) == "":
            values.pop(key)
    try:
        form = UploadForm.model_validate(values)
    except ValidationError as exc:
        raise ApiError(400, describe_validation(exc)) from None
    artifact = await request.app[ENGINE].add_artifact(
        form.execution_id, name=form.name, file_name=file_name, data=data, step_id=form.step_id,
        description=form.description, artifact_type=form.artifact_type, tags=form.tags,
    )
    return ok({"artifact": artifact_dict(artifact)}, status=201)


async def delete_artifact(request: web.Request) -> web.Response:
    artifact_id = request.match_info["artifact_id"]
    await request.app[ENGINE].delete_artifact(artifact_id)
    return ok({"message": "Artifact deleted successfully"})
