"""The studio as MCP tools: an assistant lists them, calls generate, and gets the audio back."""

from __future__ import annotations

import ast
from pathlib import Path

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from services.audio import probe
from tests.browser_support import SERVER_TOKEN, AppProcess
from tests.emulator import Emulator


async def test_an_assistant_lists_the_tools_and_makes_music(
    app: AppProcess, module_emulator: Emulator, tmp_path: Path
) -> None:
    async with (
        streamable_http_client(app.url + "gradio_api/mcp/") as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert {"generate", "extend", "variations", "arrange", "stems", "midi"} <= set(tools)
        assert "section" in tools["arrange"].inputSchema["properties"]["sections"]["description"]
        generate = tools["generate"]
        props = generate.inputSchema["properties"]
        assert list(props)[:3] == ["prompt", "input_audio", "duration"]
        # Each parameter says what it means and what it accepts, from the one help table.
        assert "from 1 to 300" in props["duration"]["description"]
        assert "loudness, clip, peak, rms" in props["normalization_strategy"]["description"]
        assert "2 to 8" in tools["variations"].inputSchema["properties"]["n"]["description"]
        assert "api_token" not in props  # the server has its own token
        before = module_emulator.creates

        result = await session.call_tool(
            "generate", {"prompt": "Lo-fi piano with vinyl crackle", "duration": 2, "seed": 7}
        )

    assert not result.isError, result.content
    assert module_emulator.creates == before + 1
    text = " ".join(getattr(part, "text", "") or "" for part in result.content)
    files = ast.literal_eval(text[text.index("[") : text.rindex("]") + 1])
    audio_url = files[0]["url"]
    record = files[1]
    assert record["status"] == "succeeded" and record["seed"] == 7
    assert SERVER_TOKEN not in text
    audio = tmp_path / "take.wav"
    audio.write_bytes(httpx.get(audio_url, timeout=30).raise_for_status().content)
    assert probe(audio).seconds == pytest.approx(2, abs=0.2)
