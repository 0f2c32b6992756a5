"""MusicGen Studio: the composition root. Reads settings, builds services and the page, launches."""

from __future__ import annotations

import gradio as gr

from services.settings import Settings


def build_app(settings: Settings) -> gr.Blocks:
    """The page shell; the full studio is built in ui/."""
    with gr.Blocks(title="MusicGen Studio") as demo:
        gr.Markdown("# MusicGen Studio")
    return demo


def main() -> None:
    settings = Settings.from_env()
    build_app(settings).queue().launch()


if __name__ == "__main__":
    main()
