"""A run's audio is served from the library where it lies, through Gradio's file route, even
when the data folder is outside the temporary directory: no staged copy, no cache copy, and
the download in the scratch folder is renamed into the library, not copied."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from services.library import Library
from tests.browser_support import (
    AppProcess,
)
from tests.support.audio_files import make_tone

AUDIO = {".wav", ".mp3", ".flac", ".ogg"}


def audio_files(folder: Path) -> list[Path]:
    found = [Path(d) / f for d, _, names in os.walk(folder) for f in names]
    return [path for path in found if path.suffix in AUDIO]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def app_settings(root: Path) -> dict[str, str]:
    # The app's temporary directory is elsewhere: the data folder is outside it (and the cwd).
    (root / "systmp").mkdir()
    # Every ffprobe the app starts is written down, then run.
    tools = root / "tools"
    tools.mkdir()
    real = shutil.which("ffprobe")
    assert real is not None
    (tools / "ffprobe").write_text(
        f'#!/bin/sh\necho "$*" >> {root / "ffprobe.log"}\nexec {real} "$@"\n'
    )
    (tools / "ffprobe").chmod(0o755)
    return {
        "GRADIO_TEMP_DIR": str(root / "gradio-cache"),
        "TMPDIR": str(root / "systmp"),
        "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}",
    }


def take(app: AppProcess, prompt: str, fmt: str = "wav") -> tuple[Path, Path, Library]:
    """A 2 s take through /generate: the file the caller got, the library's, the library."""
    client = Client(app.url, verbose=False)
    audio, record = client.predict(
        prompt=prompt, duration=2, output_format=fmt, api_name="/generate"
    )
    assert record["status"] == "succeeded", record
    library = Library(app.data_dir)
    stored = library.audio_file(library.get(record["library_id"]))
    assert stored is not None and stored.is_file()
    return Path(audio), stored, library


def test_a_runs_audio_is_served_in_place_and_never_copied(app: AppProcess, root: Path) -> None:
    _audio, stored, library = take(app, "serve me in place")
    # Through Gradio's file route, from the library itself.
    answer = httpx.get(f"{app.url}gradio_api/file={stored}", timeout=30)
    assert answer.status_code == 200
    assert answer.content == stored.read_bytes()

    # The only copy of the take is the library's: nothing staged or cached, no scratch left.
    assert audio_files(app.data_dir) == [stored]
    assert audio_files(root / "systmp") == []
    assert audio_files(root / "gradio-cache") == []
    # The database is never served.
    refused = httpx.get(f"{app.url}gradio_api/file={library.db_path}", timeout=30)
    assert refused.status_code in (403, 404)


def test_a_wav_take_is_handed_over_without_an_ffprobe(app: AppProcess, root: Path) -> None:
    # Gradio's player probes every file it sends (a process, ~70 ms of CPU); the studio's WAV
    # takes say in their header that a browser plays them, so none is started for one.
    log = root / "ffprobe.log"
    # The log does record the app's ffprobes: an MP3 take's download is checked by decoding.
    take(app, "probe my mp3", fmt="mp3")
    assert log.exists() and log.read_text().strip()
    audio, stored, _library = take(app, "no probe for me")
    assert audio.read_bytes() == stored.read_bytes()  # the take itself reached the caller
    assert stored.name not in log.read_text()


def test_a_downloaded_file_is_renamed_into_the_library_not_copied(tmp_path: Path) -> None:
    library = Library(tmp_path)
    record = library.create_pending(None, {"prompt": "rename me", "duration": 1})
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    source = make_tone(scratch / "out.wav", seconds=1.0)
    inode = source.stat().st_ino

    stored = library.attach_audio(record.id, source, fmt="wav", seconds=1.0, move=True)

    path = library.audio_file(stored)
    assert path is not None and path.stat().st_ino == inode  # the same file, renamed
    assert not source.exists() and stored.status == "succeeded"
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
