"""Fetching a checkpoint from the Hugging Face Hub, with its progress told as log lines."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.errors import StudioError

# Weights in safetensors, configs, the tokenizer: everything a MusicGen checkpoint is loaded from.
WANTED = ["*.json", "*.safetensors", "*.model", "*.txt"]
# Older repositories only ship PyTorch pickles.
FALLBACK = ["*.bin"]
# A progress line at most this often, so a large download doesn't flood the log.
REPORT_EVERY_S = 1.0


class CheckpointUnavailable(StudioError):
    """The checkpoint is neither on this machine nor downloadable."""


def _mb(n: float) -> str:
    return f"{n / 1_000_000:,.0f}"


def progress_class(checkpoint: str, log: Callable[[str], None]) -> type[Any]:
    """A tqdm class for `snapshot_download` that turns its byte counts into log lines.

    huggingface_hub creates its byte bars (unit "B") from this class and updates them from its
    download threads; the file-count bar is ignored. Lines look like
    "Downloading facebook/musicgen-small: 120 / 2,300 MB".
    """
    from tqdm.std import tqdm

    last = {"at": 0.0}

    class Reporter(tqdm):  # type: ignore[misc]  # tqdm ships no types
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            kwargs["file"] = io.StringIO()  # nothing on the server's terminal
            kwargs["disable"] = False
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            shown: bool | None = super().update(n)
            if self.unit == "B" and self.total:
                now = time.monotonic()
                done = self.n >= self.total
                if done or now - last["at"] >= REPORT_EVERY_S:
                    last["at"] = now
                    log(f"Downloading {checkpoint}: {_mb(self.n)} / {_mb(self.total)} MB")
            return shown

    return Reporter


def fetch(checkpoint: str, log: Callable[[str], None]) -> Path:
    """The folder of `checkpoint`: itself if a folder, else its Hub snapshot (fetched if needed)."""
    folder = Path(checkpoint).expanduser()
    if folder.is_dir():
        return folder
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    reporter = progress_class(checkpoint, log)
    try:
        path = Path(snapshot_download(checkpoint, allow_patterns=WANTED, tqdm_class=reporter))
        if not any(path.glob("*.safetensors")):
            path = Path(snapshot_download(checkpoint, allow_patterns=FALLBACK, tqdm_class=reporter))
    except HFValidationError:
        raise CheckpointUnavailable(
            f"“{checkpoint}” is neither a folder on this machine nor a Hugging Face model id. "
            "Check MUSICGEN_LOCAL_MODEL / MUSICGEN_LOCAL_MELODY_MODEL."
        ) from None
    except Exception as why:
        raise CheckpointUnavailable(_unavailable(checkpoint, why)) from None
    if not (path / "config.json").is_file():
        raise CheckpointUnavailable(
            f"The checkpoint {checkpoint} downloaded incompletely (it has no config.json). "
            "Try again, or point MUSICGEN_LOCAL_MODEL at a complete folder."
        )
    return path


def _unavailable(checkpoint: str, why: Exception) -> str:
    """A plain sentence for a failed fetch; the class names say which case it was."""
    kind = type(why).__name__
    if kind in {"RepositoryNotFoundError", "GatedRepoError", "RevisionNotFoundError"}:
        return (
            f"The checkpoint {checkpoint} was not found on the Hugging Face Hub (or it needs a "
            "login). Check the name, or choose another model."
        )
    return (
        f"The checkpoint {checkpoint} is not on this machine and could not be downloaded "
        "(no connection to the Hugging Face Hub). Connect this machine to the internet once so "
        "it can be downloaded, or point MUSICGEN_LOCAL_MODEL at a folder that holds it."
    )
