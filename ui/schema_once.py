"""File components whose API schema is worked out once per class, not once per update.

Gradio builds a component anew for every property update it sends (a player shown, a button's
file changed) and asks the new one for its API description: for a file component, pydantic
generates the JSON schema of its data model each time, about 4 ms of CPU. The schema belongs
to the class, so it is kept there. The classes are templates: Gradio draws each with the
component it extends (which must come first among its bases).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr


def class_api_info(component: object, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`component`'s API description, computed by `compute` once for its class."""
    cls = type(component)
    kept: dict[str, Any] | None = cls.__dict__.get("_api_info_of_class")
    if kept is None:
        kept = compute()
        cls._api_info_of_class = kept  # type: ignore[attr-defined]
    return kept


class TakeDownload(gr.DownloadButton):
    """gr.DownloadButton (a template of it)."""

    is_template = True

    def api_info(self) -> dict[str, Any]:
        return class_api_info(self, super().api_info)


class PictureImage(gr.Image):
    """gr.Image (a template of it)."""

    is_template = True

    def api_info(self) -> dict[str, Any]:
        return class_api_info(self, super().api_info)
