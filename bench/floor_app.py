"""The floor for the page benchmark: a Gradio app whose `/generate` only waits and returns a file.

`python -m bench.floor_app --port P --file F` serves it; its handler sleeps `seconds` (a
parameter, so one server serves every duration) and returns the ready audio file `F` with a
small JSON record, as our `/generate` does. What Gradio itself costs per call is the floor.
"""

from __future__ import annotations

import argparse
import asyncio

import gradio as gr


def build(audio_file: str) -> gr.Blocks:
    async def generate(prompt: str, seconds: float) -> tuple[str, dict]:
        await asyncio.sleep(float(seconds))
        return audio_file, {"status": "succeeded", "prompt": prompt}

    with gr.Blocks() as demo:
        prompt = gr.Textbox(label="prompt")
        seconds = gr.Number(label="seconds")
        audio = gr.Audio(type="filepath")
        record = gr.JSON()
        gr.Button("Generate").click(
            generate, [prompt, seconds], [audio, record], api_name="generate"
        )
    return demo


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor_app")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--file", required=True)
    args = parser.parse_args()
    build(args.file).queue().launch(
        server_name="127.0.0.1", server_port=args.port, allowed_paths=[args.file]
    )


if __name__ == "__main__":
    main()
