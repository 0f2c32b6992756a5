"""Fetching a checkpoint from the Hugging Face Hub, with its progress told as log lines."""

from __future__ import annotations

import errno
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


def fetch(
    checkpoint: str, log: Callable[[str], None], *, setting: str = "MUSICGEN_LOCAL_MODEL"
) -> Path:
    """The folder of `checkpoint`: itself if a folder, else its Hub snapshot (fetched if needed).

    `setting` is the variable that named the checkpoint, for the errors to point at.
    """
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
            f"Check {setting}."
        ) from None
    except Exception as why:
        raise CheckpointUnavailable(unavailable_message(checkpoint, why, setting)) from None
    if not (path / "config.json").is_file():
        raise CheckpointUnavailable(
            f"The checkpoint {checkpoint} downloaded incompletely (it has no config.json). "
            f"Try again, or point {setting} at a complete folder."
        )
    return path


NOT_FOUND = {"RepositoryNotFoundError", "GatedRepoError", "RevisionNotFoundError"}
# What huggingface_hub and its HTTP clients raise when the Hub can't be reached at all.
OFFLINE = {
    "LocalEntryNotFoundError",
    "OfflineModeIsEnabled",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionError",
    "TimeoutException",
    "ReadTimeout",
    "NetworkError",
}


def _chain(why: BaseException) -> list[BaseException]:
    """The exception and the ones it was raised from (the Hub wraps OS and HTTP errors)."""
    seen: list[BaseException] = []
    current: BaseException | None = why
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _status(why: BaseException) -> int | None:
    response = getattr(why, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def unavailable_message(checkpoint: str, why: BaseException, setting: str) -> str:
    """A plain sentence for a failed fetch that says which failure it was."""
    chain = _chain(why)
    kinds = {type(e).__name__ for e in chain}
    head = f"The checkpoint {checkpoint} could not be downloaded"
    if kinds & NOT_FOUND:
        return (
            f"The checkpoint {checkpoint} was not found on the Hugging Face Hub (or it needs a "
            f"login). Check the name in {setting}, or choose another model."
        )
    for error in chain:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return (
                f"{head}: the disk is full. Free some space (musicgen-small needs about 2.5 GB), "
                "or set HF_HOME to a folder on a disk with room."
            )
        if isinstance(error, PermissionError) or (
            isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
        ):
            where = f" ({error.filename})" if getattr(error, "filename", None) else ""
            return (
                f"{head}: this app may not write to the download folder{where}. Give it write "
                "permission, or set HF_HOME to a folder it can write to."
            )
        status = _status(error)
        if status is not None and status >= 500:
            return (
                f"{head}: the Hugging Face Hub answered with a server error (HTTP {status}). "
                "It is the Hub's problem, not yours: try again in a few minutes."
            )
        if status is not None:
            return (
                f"{head}: the Hugging Face Hub refused the download (HTTP {status}). Try again "
                f"later, or point {setting} at a folder that holds it."
            )
    if kinds & OFFLINE:
        return (
            f"The checkpoint {checkpoint} is not on this machine and could not be downloaded "
            "(no connection to the Hugging Face Hub). Connect this machine to the internet once "
            f"so it can be downloaded, or point {setting} at a folder that holds it."
        )
    return f"{head} ({type(why).__name__}: {why}). Try again, or point {setting} at a folder."
