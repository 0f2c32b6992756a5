"""The emulator's HTTP face: Replicate's `/v1` routes plus `/_emulator` controls."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .audio import AudioDecodeError, DecodedAudio, decode_audio
from .config import Fault, WebhookFault
from .origin import base_of
from .schema import validate_input, with_defaults
from .sse import stream_endpoint
from .state import TERMINAL, EmulatorState, RecordedRequest, StoredFile, data_url_bytes
from .webhooks import watch

EMULATOR_HEADER = "x-replicate-emulator"
EMULATOR_NOTICE = "local emulator; outputs are synthetic tones, not real music"
PROBLEM = "application/problem+json"

UNAUTHENTICATED = {
    "title": "Unauthenticated",
    "detail": "You did not pass a valid authentication token",
    "status": 401,
}
NO_CREDIT = {
    "title": "Insufficient credit",
    "detail": "You have insufficient credit to run this model. Go to "
    "https://replicate.com/account/billing#billing to purchase credit. Once you purchase "
    "credit, please wait a few minutes before trying again.",
    "status": 402,
}
BAD_VERSION = {
    "title": "Invalid version or not permitted",
    "detail": "The specified version does not exist (or perhaps you don't have permission to "
    "use it?)",
    "status": 422,
}
NOT_FOUND = {"detail": "Not found."}
GARBAGE = b"<html><body>Oops: a proxy page, not audio</body></html>" * 40
THROTTLED = {"detail": "Request was throttled. Your rate limit resets in ~30s."}
DEFAULT_FAULT_BODIES: dict[int, Any] = {
    429: THROTTLED,
    500: {"title": "Internal Server Error", "detail": "Internal server error", "status": 500},
    502: "<html><head><title>502 Bad Gateway</title></head><body>502 Bad Gateway</body></html>",
    503: {"detail": "Service Unavailable"},
    504: "<html><head><title>504 Gateway Time-out</title></head>"
    "<body>504 Gateway Time-out</body></html>",
}
BODY_KEYS = {"version", "input", "webhook", "webhook_events_filter", "stream"}
WEBHOOK_EVENTS = {"start", "output", "logs", "completed"}
VERSION_RE = re.compile(r"^(?:[\w.-]+/[\w.-]+:)?([0-9a-f]{64})$")
PREFER_RE = re.compile(r"^\s*wait(?:\s*=\s*(\d+))?\s*$")
CANCEL_AFTER_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def problem(body: dict[str, Any], status: int | None = None, **headers: str) -> JSONResponse:
    """A problem+json answer (RFC 7807 style, as Replicate sends them)."""
    return JSONResponse(
        body,
        status_code=status or int(body.get("status", 400)),
        media_type=PROBLEM,
        headers=headers,
    )


def parse_auth(header: str | None) -> tuple[str | None, str | None]:
    """(scheme, token) from an Authorization header."""
    if not header:
        return None, None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() not in ("bearer", "token") or not token.strip():
        return None, None
    return scheme, token.strip()


def parse_prefer(header: str | None) -> int | None:
    """Seconds asked for by `Prefer: wait[=N]`, or None."""
    if not header:
        return None
    for part in header.split(","):
        match = PREFER_RE.match(part)
        if match:
            seconds = int(match.group(1)) if match.group(1) else 60
            if 1 <= seconds <= 60:
                return seconds
    return None


def parse_cancel_after(value: str) -> float | None:
    """Seconds from a `Cancel-After` value like 30s, 5m, 1h30m45s or 90; None if malformed."""
    match = CANCEL_AFTER_RE.match(value.strip())
    if not value.strip() or not match or not any(match.groups()):
        return None
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def state_of(request: Request) -> EmulatorState:
    return request.app.state.emulator


def token_of(request: Request) -> str | None:
    """The caller's valid token, or None."""
    _, token = parse_auth(request.headers.get("authorization"))
    if token is None or token not in state_of(request).config.tokens:
        return None
    return token


# --- predictions ---------------------------------------------------------------------------
async def fetch_input_audio(state: EmulatorState, url: str, token: str) -> bytes:
    """The bytes behind `input_audio`: a data URL, one of our files or outputs, or a download."""
    if url.startswith("data:"):
        return data_url_bytes(url)
    path = urlsplit(url).path
    file_match = re.fullmatch(r"/v1/files/([a-z0-9]+)(?:/download)?", path)
    if file_match:
        stored = state.get_file(file_match.group(1), token)
        if stored is None:
            raise AudioDecodeError(f"could not download {url}: 404 Not Found")
        return stored.data
    delivery = re.fullmatch(r"/delivery/\w+/(\w+)/out\.\w+", path)
    if delivery:
        prediction = state.by_output_key(delivery.group(1))
        if prediction is None or prediction.is_removed(time.time()):
            raise AudioDecodeError(f"could not download {url}: 404 Not Found")
        return await run_in_threadpool(prediction.ensure_output)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.get(url)
    except httpx.HTTPError as exc:
        raise AudioDecodeError(f"could not download {url}: {exc}") from exc
    if answer.status_code != 200:
        raise AudioDecodeError(f"could not download {url}: HTTP {answer.status_code}")
    return answer.content


async def load_input_audio(
    state: EmulatorState, url: str | None, token: str
) -> tuple[DecodedAudio | None, str | None]:
    """Decode the run's input audio as the model would; (audio, None) or (None, why not)."""
    if not url:
        return None, None
    try:
        data = await fetch_input_audio(state, url, token)
        return await run_in_threadpool(decode_audio, data), None
    except AudioDecodeError as exc:
        return None, str(exc)
    except ValueError as exc:  # a malformed data URL
        return None, f"could not read the data URL: {exc}"


def input_problem(fields: list[dict[str, str]]) -> JSONResponse:
    detail = "".join(f"- {f['field']}: {f['description']}\n" for f in fields)
    return problem(
        {
            "title": "Input validation failed",
            "detail": detail,
            "status": 422,
            "invalid_fields": fields,
        }
    )


async def create_prediction(request: Request) -> Response:
    return await _create(request)


async def create_deployment_prediction(request: Request) -> Response:
    """POST /v1/deployments/{owner}/{name}/predictions: the deployment fixes the version."""
    name = f"{request.path_params['owner']}/{request.path_params['name']}"
    version = state_of(request).config.deployments.get(name)
    if token_of(request) is not None and version is None:
        return problem({"title": "Not found", "detail": "Not found.", "status": 404})
    return await _create(request, deployment_version=version)


async def _create(request: Request, deployment_version: str | None = None) -> Response:
    state = state_of(request)
    token = token_of(request)
    if token is None:
        return problem(UNAUTHENTICATED)
    config = state.config
    if token in config.no_credit_tokens:
        return problem(NO_CREDIT)
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        return problem(
            {
                "title": "Invalid JSON",
                "detail": "The request body is not valid JSON.",
                "status": 400,
            }
        )
    if not isinstance(body, dict):
        return input_problem(
            [
                {
                    "type": "invalid_type",
                    "field": "(root)",
                    "description": "Invalid type. Expected: object",
                }
            ]
        )
    root_problems = [
        {
            "type": "additional_property_not_allowed",
            "field": "(root)",
            "description": f"Additional property {key} is not allowed",
        }
        for key in body
        if key not in BODY_KEYS
    ]
    if deployment_version is not None:
        # A deployment's body has no version: the deployment decides it.
        if "version" in body:
            root_problems.append(
                {
                    "type": "additional_property_not_allowed",
                    "field": "(root)",
                    "description": "Additional property version is not allowed",
                }
            )
        body = {**body, "version": deployment_version}
    root_problems += [
        {"type": "required", "field": "(root)", "description": f"{key} is required"}
        for key in ("version", "input")
        if key not in body
    ]
    filters = body.get("webhook_events_filter")
    if filters is not None and (
        not isinstance(filters, list) or any(item not in WEBHOOK_EVENTS for item in filters)
    ):
        root_problems.append(
            {
                "type": "enum",
                "field": "webhook_events_filter",
                "description": "webhook_events_filter must be a list of "
                '"start", "output", "logs", "completed"',
            }
        )
    webhook = body.get("webhook")
    if webhook is not None and (
        not isinstance(webhook, str) or urlsplit(webhook).scheme not in ("http", "https")
    ):
        # Replicate asks for an https URL; the emulator also takes http, for loopback tests.
        root_problems.append(
            {
                "type": "format",
                "field": "webhook",
                "description": "Does not match format 'uri'",
            }
        )
    if root_problems:
        return input_problem(root_problems)
    match = VERSION_RE.match(str(body["version"])) if isinstance(body["version"], str) else None
    if match is None or match.group(1) not in config.versions:
        return problem(BAD_VERSION)
    invalid = validate_input(body["input"])
    if invalid:
        return input_problem([item.to_dict() for item in invalid])

    deadline = None
    cancel_after = request.headers.get("cancel-after")
    if cancel_after is not None:
        deadline = parse_cancel_after(cancel_after)
        if deadline is None or deadline < config.min_cancel_after_seconds:
            return problem(
                {
                    "title": "Invalid Cancel-After header",
                    "detail": "Cancel-After must be a duration such as 30s, 5m or 1h30m, "
                    f"at least {config.min_cancel_after_seconds:g}s.",
                    "status": 400,
                }
            )
    model_inputs = with_defaults(body["input"])
    audio, audio_error = await load_input_audio(state, model_inputs.get("input_audio"), token)
    prediction = state.create_prediction(
        token=token,
        version=match.group(1),
        inputs=body["input"],
        model_inputs=model_inputs,
        audio=audio,
        audio_error=audio_error,
        deadline_seconds=deadline,
        webhook=webhook,
        webhook_events_filter=filters,
    )
    watch(state, prediction, base_of(request, config))

    headers: dict[str, str] = {}
    status_code = 201
    wait = parse_prefer(request.headers.get("prefer"))
    if wait is not None:
        headers["Preference-Applied"] = f"wait={wait}"
        give_up = time.monotonic() + min(wait, config.max_wait_seconds)
        # Status follows the clock, so there is no event to wait on: check it often.
        while prediction.status(time.time()) not in TERMINAL and time.monotonic() < give_up:
            await asyncio.sleep(min(0.02, max(0.0, give_up - time.monotonic())))
        if prediction.status(time.time()) not in TERMINAL:
            status_code = config.wait_incomplete_status
    return await prediction_response(request, prediction, status_code, headers)


async def prediction_response(
    request: Request, prediction: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> JSONResponse:
    """Answer with the prediction as it stands, rendering its output file first if it is new."""
    now = time.time()
    if prediction.status(now) == "succeeded" and not prediction.is_removed(now):
        await run_in_threadpool(prediction.ensure_output)
    body = prediction.to_json(base_of(request, state_of(request).config), now)
    return JSONResponse(body, status_code=status_code, headers=headers)


async def get_prediction(request: Request) -> Response:
    token = token_of(request)
    if token is None:
        return problem(UNAUTHENTICATED)
    prediction = state_of(request).get_prediction(request.path_params["id"], token)
    if prediction is None:
        return JSONResponse(NOT_FOUND, status_code=404)
    return await prediction_response(request, prediction)


async def cancel_prediction(request: Request) -> Response:
    token = token_of(request)
    if token is None:
        return problem(UNAUTHENTICATED)
    state = state_of(request)
    prediction = state.get_prediction(request.path_params["id"], token)
    if prediction is None:
        return JSONResponse(NOT_FOUND, status_code=404)
    state.cancel(prediction, time.time())
    return await prediction_response(request, prediction)


def _cursor(created: float, pid: str, direction: str) -> str:
    import base64

    raw = json.dumps([direction, created, pid]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_cursor(cursor: str) -> tuple[str, float, str]:
    import base64

    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    direction, created, pid = json.loads(raw)
    if direction not in ("n", "p"):
        raise ValueError("bad direction")
    return str(direction), float(created), str(pid)


async def list_predictions(request: Request) -> Response:
    token = token_of(request)
    if token is None:
        return problem(UNAUTHENTICATED)
    state = state_of(request)
    size = max(1, int(state.config.page_size))
    items = state.listing(token)
    cursor = request.query_params.get("cursor")
    if cursor:
        try:
            direction, created, pid = _read_cursor(cursor)
        except (ValueError, TypeError):
            return JSONResponse({"detail": "Invalid cursor."}, status_code=400)
        key = (created, pid)
        if direction == "n":
            items = [p for p in items if (p.created, p.id) < key]
            page = items[:size]
            has_newer = True
        else:
            newer = [p for p in items if (p.created, p.id) > key]
            page = newer[-size:]
            has_newer = len(newer) > size
    else:
        page = items[:size]
        has_newer = False
    base = base_of(request, state.config)
    oldest_on_page = page[-1] if page else None
    has_older = oldest_on_page is not None and any(
        (p.created, p.id) < (oldest_on_page.created, oldest_on_page.id)
        for p in state.listing(token)
    )
    now = time.time()
    results = []
    for prediction in page:
        if prediction.status(now) == "succeeded" and not prediction.is_removed(now):
            await run_in_threadpool(prediction.ensure_output)
        results.append(prediction.to_json(base, now))
    next_url = (
        f"{base}/v1/predictions?cursor={_cursor(oldest_on_page.created, oldest_on_page.id, 'n')}"
        if has_older and oldest_on_page is not None
        else None
    )
    previous_url = (
        f"{base}/v1/predictions?cursor={_cursor(page[0].created, page[0].id, 'p')}"
        if has_newer and page
        else None
    )
    return JSONResponse({"next": next_url, "previous": previous_url, "results": results})


async def delivery(request: Request) -> Response:
    """An output file on its delivery URL (no auth, like replicate.delivery)."""
    state = state_of(request)
    prediction = state.by_output_key(request.path_params["key"])
    now = time.time()
    if (
        prediction is None
        or prediction.status(now) != "succeeded"
        or prediction.is_removed(now)
        or request.path_params["name"] != f"out.{prediction.plan.output_format}"
    ):
        return Response("Not found", status_code=404, media_type="text/plain")
    data = await run_in_threadpool(prediction.ensure_output)
    media = "audio/wav" if prediction.plan.output_format == "wav" else "audio/mpeg"
    return Response(data, media_type=media)


# --- files -----------------------------------------------------------------------------------
def _bad_upload(detail: str) -> JSONResponse:
    return problem({"title": "Bad request", "detail": detail, "status": 400})


TOO_LARGE = {
    "title": "Content Too Large",
    "detail": "Files must be less than 100MB in size",
    "status": 413,
}


async def _read_upload(form: Any, limit: int) -> tuple[str, str, bytes, Any] | JSONResponse:
    """(filename, content type, bytes, metadata) from the multipart form, or the refusal."""
    content = form.get("content")
    if content is None or isinstance(content, str):
        return _bad_upload("The multipart field `content` is required.")
    data = await content.read()
    if len(data) > limit:
        return problem(TOO_LARGE)
    metadata: Any = {}
    raw_meta = form.get("metadata")
    if raw_meta is not None:
        text = raw_meta if isinstance(raw_meta, str) else (await raw_meta.read()).decode()
        try:
            metadata = json.loads(text)
        except ValueError:
            return _bad_upload("`metadata` must be valid JSON.")
    name = form.get("filename")
    name = name if isinstance(name, str) and name else (content.filename or "file")
    if len(name.encode()) > 255:
        return _bad_upload("The filename is longer than 255 bytes.")
    ctype = form.get("type")
    if not isinstance(ctype, str) or not ctype:
        ctype = content.content_type or "application/octet-stream"
    return name, ctype, data, metadata


async def create_file(request: Request) -> Response:
    token = token_of(request)
    if token is None:
        return problem(UNAUTHENTICATED)
    state = state_of(request)
    limit = state.config.max_file_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        return problem(TOO_LARGE)
    try:
        form = await request.form(max_part_size=max(limit + 1, 1024 * 1024))
    except Exception as exc:  # starlette raises MultiPartException / HTTPException
        return _bad_upload(f"Invalid multipart body: {exc}")
    try:
        upload = await _read_upload(form, limit)
    finally:
        await form.close()
    if isinstance(upload, JSONResponse):
        return upload
    name, ctype, data, metadata = upload
    stored = state.add_file(
        token=token, name=name, content_type=ctype, data=data, metadata=metadata
    )
    return JSONResponse(stored.to_json(base_of(request, state.config)), status_code=201)


def _file_not_found() -> JSONResponse:
    return problem({"detail": "File not found"}, status=404)


def _owned_file(request: Request) -> StoredFile | Response:
    """The file the path names, if the caller's token owns it; else the error to answer."""
    token = token_of(request)
    if token is None:
        return problem(UNAUTHENTICATED)
    stored = state_of(request).get_file(request.path_params["id"], token)
    return _file_not_found() if stored is None else stored


async def get_file(request: Request) -> Response:
    stored = _owned_file(request)
    if isinstance(stored, Response):
        return stored
    return JSONResponse(stored.to_json(base_of(request, state_of(request).config)))


async def delete_file(request: Request) -> Response:
    stored = _owned_file(request)
    if isinstance(stored, Response):
        return stored
    state = state_of(request)
    with state.lock:
        state.files.pop(stored.id, None)
    return Response(status_code=204)


async def download_file(request: Request) -> Response:
    """The file's bytes, for its owner's token (the real route also takes a signed query)."""
    token = token_of(request)
    state = state_of(request)
    stored = state.get_file(request.path_params["id"], token) if token else None
    if stored is None and token is None and request.query_params.get("signature"):
        stored = state.get_file(request.path_params["id"])
    if stored is None:
        return _file_not_found() if token or request.query_params else problem(UNAUTHENTICATED)
    return Response(stored.data, media_type=stored.content_type)


async def list_files(request: Request) -> Response:
    token = token_of(request)
    if token is None:
        return problem(UNAUTHENTICATED)
    state = state_of(request)
    base = base_of(request, state.config)
    with state.lock:
        mine = [f for f in state.files.values() if f.token == token]
    mine.sort(key=lambda f: f.created, reverse=True)
    return JSONResponse(
        {"next": None, "previous": None, "results": [f.to_json(base) for f in mine]}
    )


async def account(request: Request) -> Response:
    token = token_of(request)
    if token is None:
        return problem(UNAUTHENTICATED)
    return JSONResponse(
        {"type": "user", "username": "emulator", "name": "Emulator User", "github_url": None}
    )


async def webhook_secret(request: Request) -> Response:
    token = token_of(request)
    if token is None:
        return problem(UNAUTHENTICATED)
    return JSONResponse({"key": state_of(request).webhook_secret(token)})


async def not_found(request: Request) -> Response:
    return JSONResponse(NOT_FOUND, status_code=404)


# --- controls --------------------------------------------------------------------------------
async def control_requests(request: Request) -> Response:
    state = state_of(request)
    with state.lock:
        items = [item.to_dict() for item in state.requests]
    return JSONResponse({"requests": items, "creates": state.creates})


async def control_config(request: Request) -> Response:
    state = state_of(request)
    if request.method == "POST":
        try:
            state.config.update(await request.json())
        except (KeyError, ValueError) as exc:
            return JSONResponse({"detail": str(exc)}, status_code=400)
    return JSONResponse(state.config.to_dict())


async def control_faults(request: Request) -> Response:
    state = state_of(request)
    if request.method == "POST":
        try:
            state.add_fault(Fault(**(await request.json())))
        except (TypeError, ValueError) as exc:
            return JSONResponse({"detail": str(exc)}, status_code=400)
    with state.lock:
        return JSONResponse({"faults": [fault.to_dict() for fault in state.faults]})


async def control_webhooks(request: Request) -> Response:
    """GET: every webhook delivery attempt; POST: add a webhook fault (WebhookFault fields)."""
    state = state_of(request)
    if request.method == "POST":
        try:
            state.add_webhook_fault(WebhookFault(**(await request.json())))
        except (TypeError, ValueError) as exc:
            return JSONResponse({"detail": str(exc)}, status_code=400)
    with state.lock:
        return JSONResponse(
            {
                "webhooks": [sent.to_dict() for sent in state.webhooks],
                "faults": [fault.to_dict() for fault in state.webhook_faults],
            }
        )


async def control_reset(request: Request) -> Response:
    state_of(request).reset()
    return JSONResponse({"reset": True})


async def control_expire(request: Request) -> Response:
    state_of(request).expire_outputs()
    return JSONResponse({"expired": True})


async def control_predictions(request: Request) -> Response:
    state = state_of(request)
    now = time.time()
    base = base_of(request, state.config)
    with state.lock:
        items = list(state.predictions.values())
    return JSONResponse(
        {
            "predictions": [
                {
                    **p.to_json(base, now),
                    "token_owner": p.token,
                    "input_audio_info": p.input_audio_info,
                    "input_audio_error": p.input_audio_error,
                }
                for p in items
            ]
        }
    )


ROUTES = [
    Route("/v1/predictions", create_prediction, methods=["POST"]),
    Route(
        "/v1/deployments/{owner}/{name}/predictions",
        create_deployment_prediction,
        methods=["POST"],
    ),
    Route("/v1/predictions", list_predictions, methods=["GET"]),
    Route("/v1/predictions/{id}", get_prediction, methods=["GET"]),
    Route("/v1/predictions/{id}/cancel", cancel_prediction, methods=["POST"]),
    Route("/v1/streams/{id}", stream_endpoint, methods=["GET"]),
    Route("/v1/files", create_file, methods=["POST"]),
    Route("/v1/files", list_files, methods=["GET"]),
    Route("/v1/files/{id}", get_file, methods=["GET"]),
    Route("/v1/files/{id}", delete_file, methods=["DELETE"]),
    Route("/v1/files/{id}/download", download_file, methods=["GET"]),
    Route("/v1/account", account, methods=["GET"]),
    Route("/v1/webhooks/default/secret", webhook_secret, methods=["GET"]),
    Route("/delivery/{bucket}/{key}/{name}", delivery, methods=["GET"]),
    Route("/_emulator/requests", control_requests, methods=["GET"]),
    Route("/_emulator/config", control_config, methods=["GET", "POST"]),
    Route("/_emulator/faults", control_faults, methods=["GET", "POST"]),
    Route("/_emulator/webhooks", control_webhooks, methods=["GET", "POST"]),
    Route("/_emulator/reset", control_reset, methods=["POST"]),
    Route("/_emulator/expire", control_expire, methods=["POST"]),
    Route("/_emulator/predictions", control_predictions, methods=["GET"]),
]


# --- the outer ASGI layer: recording, faults, rate limits, emulator header ------------------
class EmulatorMiddleware:
    """Records each request, applies injected faults and rate limits, marks every answer."""

    def __init__(self, app: ASGIApp, state: EmulatorState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_emulator"):
            await self.app(scope, receive, send)
            return
        state = self.state
        method = scope["method"]
        path = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        scheme, token = parse_auth(headers.get("authorization"))
        if "authorization" in headers:
            headers["authorization"] = "REDACTED"

        body = b""
        is_json = "json" in headers.get("content-type", "")
        if is_json:
            body = await _read_body(receive)
            receive = _replay(body, receive)
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        record = RecordedRequest(
            method=method,
            path=path,
            query=dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))),
            headers=headers,
            token=token,
            auth_scheme=scheme,
            json=parsed,
            time=time.time(),
            peer=":".join(str(part) for part in scope.get("client") or ()),
        )
        state.record(record)

        async def marked_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                extra = [(EMULATOR_HEADER.encode(), EMULATOR_NOTICE.encode())]
                if path.startswith("/v1/") and token:
                    extra += rate_headers
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        rate_headers: list[tuple[bytes, bytes]] = []
        fault = state.take_fault(method, path)
        if fault is not None:
            record.fault = fault.kind
            if fault.after and fault.kind in ("status", "malformed"):
                await self.app(scope, receive, _swallow)
            if fault.kind == "drop":
                self.drop(scope)
                return
            if fault.kind == "slow":
                await asyncio.sleep(fault.delay)
            elif fault.kind == "drop_after":
                await self.app(scope, receive, _swallow)
                self.drop(scope)
                return
            elif fault.kind == "expire":
                state.expire_outputs()
            elif fault.kind == "garbage":
                raw = fault.body.encode() if isinstance(fault.body, str) else GARBAGE
                await _send_raw(marked_send, 200, raw, "audio/wav")
                return
            elif fault.kind in ("late", "truncate", "cut"):
                await self.reshaped(scope, receive, marked_send, fault)
                return
            elif fault.kind == "malformed":
                await _send_raw(marked_send, 200, b'{"id": "oops", "status": ', "application/json")
                return
            elif fault.kind == "status":
                await _send_fault(marked_send, fault)
                return

        if path.startswith("/v1/") and token and token in state.config.tokens:
            bucket = "create" if method == "POST" and path == "/v1/predictions" else "read"
            remaining, reset, allowed = state.rate_limit(token, bucket, time.time())
            rate_headers = [
                (b"ratelimit-remaining", str(remaining).encode()),
                (b"ratelimit-reset", str(reset).encode()),
            ]
            if not allowed:
                record.status = 429
                await _send_raw(marked_send, 429, json.dumps(THROTTLED).encode(), PROBLEM)
                return
        await self.app(scope, receive, marked_send)

    async def reshaped(self, scope: Scope, receive: Receive, send: Send, fault: Fault) -> None:
        """Handle the request, then answer late (`late`) or with part of the body."""
        captured: list[Message] = []

        async def capture(message: Message) -> None:
            captured.append(message)

        await self.app(scope, receive, capture)
        start = next(m for m in captured if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in captured if m["type"] == "http.response.body")
        if fault.kind == "late":
            await asyncio.sleep(fault.delay)
            with contextlib.suppress(Exception):  # the client may have hung up meanwhile
                await send(start)
                await send({"type": "http.response.body", "body": body})
            return
        part = body[: int(len(body) * fault.fraction)]
        length = len(part) if fault.kind == "truncate" else len(body)
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(length).encode()))
        await send({**start, "headers": headers})
        if fault.kind == "truncate":
            await send({"type": "http.response.body", "body": part})
            return
        await send({"type": "http.response.body", "body": part, "more_body": True})
        self.drop(scope)

    def drop(self, scope: Scope) -> None:
        """Close this request's TCP connection without an answer."""
        server = self.state.server
        client = tuple(scope.get("client") or ())
        if server is not None:
            for connection in list(server.server_state.connections):
                if tuple(getattr(connection, "client", None) or ()) == client:
                    connection.transport.abort()
                    return
        raise ConnectionAbortedError("emulator: could not find the connection to drop")


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands out the already-read body once, then the real channel."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _swallow(message: Message) -> None:
    return None


async def _send_raw(
    send: Send, status: int, body: bytes, media: str, extra: list | None = None
) -> None:
    headers = [(b"content-type", media.encode()), (b"content-length", str(len(body)).encode())]
    await send(
        {"type": "http.response.start", "status": status, "headers": headers + (extra or [])}
    )
    await send({"type": "http.response.body", "body": body})


async def _send_fault(send: Send, fault: Fault) -> None:
    body = (
        fault.body
        if fault.body is not None
        else DEFAULT_FAULT_BODIES.get(fault.status, {"detail": "Error"})
    )
    if isinstance(body, str | bytes):
        raw = body.encode() if isinstance(body, str) else body
        media = "text/html" if raw.lstrip().startswith(b"<") else "text/plain"
    else:
        raw = json.dumps(body).encode()
        media = PROBLEM if isinstance(body, dict) and "title" in body else "application/json"
    extra = [(b"retry-after", fault.retry_after.encode())] if fault.retry_after else []
    extra += [(k.lower().encode(), v.encode()) for k, v in fault.headers.items()]
    await _send_raw(send, fault.status, raw, media, extra)


def create_app(state: EmulatorState) -> ASGIApp:
    """The emulator as an ASGI app around `state`."""
    app = Starlette(routes=ROUTES)
    app.state.emulator = state
    app.add_route("/{path:path}", not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    return EmulatorMiddleware(app, state)
