"""What every handler needs: the services, the settings, and how to tell visitors apart."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.generation import GenerationService
from services.library import Library, RunRecord
from services.settings import Settings
from ui.files import FileServer
from ui.identity import Visitor, api_visitor, page_visitor


@dataclass(frozen=True)
class Studio:
    """The services behind the page; shared by every visitor (it holds no visitor state)."""

    settings: Settings
    service: GenerationService
    library: Library
    files: FileServer

    def owner(self, browser_value: object) -> str | None:
        """The library owner for a page event: None locally; when shared, the signed-in
        account, else the browser's identity (see ui.identity)."""
        return self.visitor(browser_value).owner

    def visitor(self, browser_value: object) -> Visitor:
        """Whose history a page event sees and whose allowance it spends (ui.identity)."""
        s = self.settings
        return page_visitor(s.shared, browser_value, behind_proxy=s.behind_proxy)

    def api_visitor(self, access_key: object = None) -> Visitor:
        """An API call's own runs (its access key, else fresh ones) and its allowance."""
        s = self.settings
        return api_visitor(s.shared, behind_proxy=s.behind_proxy, access_key=access_key)

    def token(self, pasted: object) -> str | None:
        """The visitor's pasted token, unless the server has its own (then it is ignored)."""
        if self.service.server_token_set or not isinstance(pasted, str):
            return None
        return pasted.strip() or None

    def snapshot(self, record: RunRecord) -> dict[str, Any]:
        """What the follow-up actions need to know about a run (kept in a gr.State)."""
        return {
            "run_id": record.id,
            "audio_path": self.files.servable(self.library.audio_file(record)),
            "audio_seconds": record.audio_seconds,
            "audio_format": record.audio_format,
            "seed": record.seed,
            "request": dict(record.request),
            # The library's own copy of the input clip (the upload's file may be long gone).
            "input_audio_path": self.files.servable(self.library.input_file(record)),
        }

    def run_snapshot(self, run_id: str | None, owner: str | None) -> dict[str, Any] | None:
        """The snapshot of one of this visitor's runs, or None if it is not theirs."""
        if not run_id:
            return None
        record = self.library.get(run_id, owner)
        return self.snapshot(record) if record else None
