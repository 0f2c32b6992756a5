"""The studio page (Gradio Blocks only); `build` makes it, `launch_options` launches it;
`webhook_routes` are the server's extra routes (Replicate's webhooks), `server_middleware` its
ASGI middleware (a full queue said clearly; the page and its config made once, not per visitor)."""

from starlette.middleware import Middleware

from ui.busy import BusyMessage
from ui.layout import build, launch_options
from ui.page_cache import PageCache
from ui.webhooks import webhook_routes


def server_middleware() -> list[Middleware]:
    """The FastAPI app's middleware, for `demo.launch(app_kwargs={"middleware": ...})`."""
    return [Middleware(BusyMessage), Middleware(PageCache)]


__all__ = ["build", "launch_options", "server_middleware", "webhook_routes"]
