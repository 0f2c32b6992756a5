"""The studio page (Gradio Blocks only); `build` makes it, `launch_options` launches it;
`webhook_routes` are the server's extra routes (Replicate's webhooks)."""

from ui.layout import build, launch_options
from ui.webhooks import webhook_routes

__all__ = ["build", "launch_options", "webhook_routes"]
