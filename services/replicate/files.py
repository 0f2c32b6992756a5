"""Files: inputs sent to a model (inline data: URL or the files API) and outputs fetched back."""

from __future__ import annotations

import asyncio
import base64
import binascii
import mimetypes
import os
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx

from services.errors import ApiError, AudioError, NotFound, OutputExpired, ServerError
from services.replicate.http import Api, json_body
from services.replicate.retry import (
    DOWNLOAD_PATIENCE,
    DOWNLOAD_RETRY,
    RetryPolicy,
    retrying,
    transient,
)

T = TypeVar("T")

# Replicate's files API refuses larger uploads (413).
MAX_UPLOAD_BYTES = 100 * 1024 * 1024
# Replicate advises data URLs only up to about this size; larger files go through /v1/files.
DATA_URL_MAX_BYTES = 256 * 1024
# Replicate deletes an API run's output about an hour after the run completed.
OUTPUT_LIFETIME_S = 3600.0
_ONE_TRY = RetryPolicy(attempts=1)

# Fixed here because the platform's MIME table varies (Debian's media-types says audio/wav).
_AUDIO_TYPES = {".wav": "audio/x-wav", ".mp3": "audio/mpeg", ".flac": "audio/flac"}


def guess_content_type(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in _AUDIO_TYPES:
        return _AUDIO_TYPES[suffix]
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def decode_data_url(url: str) -> bytes:
    """The bytes of a `data:` URL (base64 or percent-encoded)."""
    header, sep, payload = url.partition(",")
    if not header.startswith("data:") or not sep:
        raise AudioError("The output is a malformed data: URL.")
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise AudioError("The output is a data: URL with broken base64 content.") from exc
    return urllib.parse.unquote_to_bytes(payload)


def _unchecked(path: Path) -> None:
    return None


class Files:
    """Uploads and output downloads for one account."""

    def __init__(
        self,
        api: Api,
        *,
        download_retry: RetryPolicy | None = None,
        download_patience: RetryPolicy | None = None,
        output_lifetime: float = OUTPUT_LIFETIME_S,
    ):
        self.api = api
        # A few quick tries at once; then, while the output lives (`output_lifetime` seconds
        # after the run completed), one try after each of `download_patience`'s pauses.
        self.download_retry = download_retry or DOWNLOAD_RETRY
        self.download_patience = download_patience or DOWNLOAD_PATIENCE
        self.output_lifetime = output_lifetime

    async def upload(self, path: Path, content_type: str | None = None) -> str:
        """A URI the model can read `path` from: a data: URL when small, else the files API."""
        path = Path(path)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise AudioError(f"input_audio: the file {path.name} cannot be read.") from exc
        if size > MAX_UPLOAD_BYTES:
            raise AudioError(
                f"input_audio: {path.name} is {size / 2**20:.0f} MB; Replicate accepts files up "
                "to 100 MB. Use a shorter clip or a compressed format (mp3, ogg)."
            )
        ctype = content_type or guess_content_type(path)
        data = await asyncio.to_thread(path.read_bytes)
        if size <= DATA_URL_MAX_BYTES:
            return f"data:{ctype};base64,{base64.b64encode(data).decode('ascii')}"
        t = self.api.timeouts
        # An upload retried after a lost answer only leaves an orphan file behind: harmless.
        response = await self.api.send(
            "POST",
            "/v1/files",
            files={"content": (path.name, data, ctype)},
            timeout=t.with_read(t.download, write=t.download),
        )
        body = json_body(response)
        url = (body.get("urls") or {}).get("get") if isinstance(body, dict) else None
        if not isinstance(url, str) or not url:
            raise ServerError("The Replicate files API answered without the file's URL.")
        return url

    async def download(self, url: str, dest: Path) -> Path:
        """Fetch an output (https or data: URL) to `dest`, atomically; OutputExpired if gone."""
        await self.download_checked(url, Path(dest), _unchecked)
        return Path(dest)

    async def download_checked(
        self, url: str, dest: Path, check: Callable[[Path], T], *, once: bool = False
    ) -> T:
        """Fetch an output to `dest` and return `check(file)`.

        `check` (blocking, run in a thread) raises AudioError for a file that will not do:
        garbage, or cut short. Such a file, a broken transfer, a 5xx or a 429 are fetched
        again under `download_retry` (`once`: not at all) while the URL lives; only a good
        file ever replaces `dest`. An expired URL (404/410) raises OutputExpired at once.
        """
        dest = Path(dest)
        await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
        return await retrying(
            lambda: self._fetch_checked(url, dest, check),
            _ONE_TRY if once else self.download_retry,
            what="download of the run's output",
            retry_on=lambda failure: transient(failure) or isinstance(failure, AudioError),
        )

    async def _fetch_checked(self, url: str, dest: Path, check: Callable[[Path], T]) -> T:
        data = await self._fetch_output(url)
        part = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            await asyncio.to_thread(part.write_bytes, data)
            result = await asyncio.to_thread(check, part)
            await asyncio.to_thread(os.replace, part, dest)
        finally:
            part.unlink(missing_ok=True)
        return result

    async def _fetch_output(self, url: str) -> bytes:
        """The bytes of an output, in one try."""
        if url.startswith("data:"):
            return decode_data_url(url)
        scheme = httpx.URL(url).scheme
        if scheme not in ("http", "https"):
            raise ApiError(f"The run's output has an address this app cannot fetch ({scheme}).")
        t = self.api.timeouts
        try:
            response = await self.api.request("GET", url, timeout=t.with_read(t.download))
        except NotFound as exc:
            raise OutputExpired(
                "The run's output is no longer available: Replicate deletes outputs of API "
                "runs after about an hour."
            ) from exc
        except ApiError as exc:
            if exc.status == 410:
                raise OutputExpired(
                    "The run's output is no longer available (the server says it is gone)."
                ) from exc
            raise
        return response.content
