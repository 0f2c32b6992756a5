"""The app's webhook route: Replicate POSTs a run's news here (MUSICGEN_PUBLIC_URL + the path).

It lives on Gradio's own server (its FastAPI app takes extra routes through `app_kwargs`), reads
the raw body and hands it, with the headers, to the engines' webhook registry, which checks the
signature before anything changes. The route never speaks to Replicate itself.
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from services.engines.replicate.webhooks import MAX_BODY_BYTES, WebhookRegistry


def webhook_routes(registry: WebhookRegistry) -> list[BaseRoute]:
    """The POST route for Replicate's webhooks (present even when unarmed: it answers 404)."""

    async def receive(request: Request) -> Response:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return JSONResponse({"detail": "Too large."}, status_code=413)
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    return JSONResponse({"detail": "Too large."}, status_code=413)
        except ClientDisconnect:
            return Response(status_code=400)
        verdict = registry.receive(request.headers, bytes(body))
        return JSONResponse({"detail": verdict.detail}, status_code=verdict.status)

    return [Route(registry.path, receive, methods=["POST"], name="replicate_webhook")]
