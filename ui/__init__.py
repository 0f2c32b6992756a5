"""The studio page (Gradio Blocks only); `build` makes it, `launch_options` launches it."""

from ui.layout import build, launch_options

__all__ = ["build", "launch_options"]
