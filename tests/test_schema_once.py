"""The file components the page updates most (the take's player and preview, its download, the
piano roll) describe their API as Gradio's own do, worked out once for the class: Gradio
builds one anew for each property update it sends."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pytest
from pydantic import BaseModel

from ui.schema_once import PictureImage, TakeDownload
from ui.take_audio import TakeAudio


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(TakeAudio, gr.Audio), (TakeDownload, gr.DownloadButton), (PictureImage, gr.Image)],
)
def test_the_schema_is_gradios_and_made_once(
    ours: type[Any], theirs: type[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    made = 0
    schema = BaseModel.model_json_schema.__func__  # type: ignore[attr-defined]

    def counted(cls: type[BaseModel], *args: Any, **kwargs: Any) -> Any:
        nonlocal made
        made += 1
        return schema(cls, *args, **kwargs)

    expected = theirs(render=False).api_info()
    monkeypatch.setattr(BaseModel, "model_json_schema", classmethod(counted))
    first = ours(render=False).api_info()
    before = made
    for _ in range(3):  # three property updates: three new components
        assert ours(render=False, visible=False).api_info() == expected
    assert first == expected and made == before  # no schema made again
