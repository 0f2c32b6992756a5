"""Any result in any format, and the loudness match of A/B compare: real takes from the
emulator over real HTTP, converted and measured with real ffmpeg."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from services.compose import audio_ops
from services.compose.compare import loudness_of, match
from services.compose.formats import FORMATS, FormatCache, download_name, slug
from services.compose.loop import LoopMaker
from services.generation import GenerationService
from services.library import Library, RunRecord
from services.musicgen import GenerationRequest
from tests.emulator import Emulator
from tests.support.services import make_service

MP3_PADDING_S = 0.05


async def take(service: GenerationService, emulator: Emulator, **fields) -> RunRecord:
    last = None
    async for update in service.generate(
        GenerationRequest(**fields), token=emulator.token, owner=None
    ):
        last = update
    assert last is not None and last.status == "succeeded", last
    record = service.library.get(last.run_id)
    assert record is not None
    return record


def ffprobe_seconds(path: Path) -> tuple[float, str]:
    """(decoded length, codec) as ffprobe reports them."""
    out = subprocess.run(
        [
            "ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_name",
            "-of", "json", str(path),
        ],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    info = json.loads(out)
    return float(info["format"]["duration"]), info["streams"][0]["codec_name"]


async def test_every_result_downloads_in_every_format_named_for_what_it_is(
    emulator: Emulator, tmp_path: Path
) -> None:
    service = make_service(emulator, tmp_path / "data")
    record = await take(
        service, emulator, prompt="Lo-fi piano, rain on the window", duration=3, seed=1234,
        output_format="mp3",
    )  # fmt: skip
    library = Library(tmp_path / "data")
    cache = FormatCache(library)
    source_seconds = audio_ops.seconds(audio_ops.load(library.audio_file(record)))
    day = time.strftime("%Y-%m-%d", time.gmtime(record.created_at))
    codecs = {"wav": "pcm_s16le", "mp3": "mp3", "flac": "flac"}

    for fmt in FORMATS:
        folder = tmp_path / f"download-{fmt}"
        folder.mkdir()
        path = cache.deliver(record, fmt, folder)
        assert path.name == f"lo-fi-piano-rain-seed1234-{day}.{fmt}"
        seconds, codec = ffprobe_seconds(path)
        assert codec == codecs[fmt]
        if fmt != "mp3":  # an mp3's header length is an estimate: its decoded length counts
            assert seconds == pytest.approx(source_seconds, abs=1 / 32000)
        decoded = audio_ops.load(path)
        assert audio_ops.seconds(decoded) == pytest.approx(source_seconds, abs=MP3_PADDING_S)

    # The conversions are kept: asking again reuses the very file, and makes nothing new.
    cached = {fmt: cache.converted(record, fmt) for fmt in ("wav", "flac")}
    stamps = {fmt: p.stat().st_mtime_ns for fmt, p in cached.items()}
    files_before = sorted(p.name for p in cache.folder.iterdir())
    again = {fmt: cache.converted(record, fmt) for fmt in ("wav", "flac")}
    assert again == cached
    assert {fmt: p.stat().st_mtime_ns for fmt, p in again.items()} == stamps
    assert sorted(p.name for p in cache.folder.iterdir()) == files_before
    assert cache.converted(record, "mp3") == library.audio_file(record)  # already mp3

    # When the entry's audio changes, the old conversion is not handed out again.
    replacement = tmp_path / "longer.wav"
    audio_ops.export(audio_ops.load(library.audio_file(record)) * 2, replacement, "wav")
    changed = library.attach_audio(record.id, replacement, fmt="wav", seconds=6.0)
    flac = cache.converted(changed, "flac")
    assert flac != cached["flac"] and not cached["flac"].exists()
    assert ffprobe_seconds(flac)[0] == pytest.approx(2 * source_seconds, abs=MP3_PADDING_S)

    # A deleted entry's conversions go with the next conversion made.
    other = await take(service, emulator, prompt="Second take", duration=2, output_format="wav")
    assert library.delete(record.id)
    cache.converted(other, "mp3")
    assert [p.name.split("-", 1)[0] for p in cache.folder.iterdir()] == [other.id]


async def test_a_loop_download_says_its_bpm_and_bars(emulator: Emulator, tmp_path: Path) -> None:
    service = make_service(emulator, tmp_path)
    maker = LoopMaker(service, Library(tmp_path))
    request, spec = maker.prepare({"prompt": "Dusty funk drums", "seed": 77}, 96, 2)
    final = [u async for u in maker.make(request, spec, token=emulator.token, owner=None)][-1]
    record = Library(tmp_path).get(final.run_id)
    day = time.strftime("%Y-%m-%d", time.gmtime(record.created_at))
    assert download_name(record, "mp3") == f"dusty-funk-drums-loop-96bpm-2bars-seed77-{day}.mp3"
    path = FormatCache(Library(tmp_path)).deliver(record, "flac", tmp_path)
    frames = audio_ops.load(path).frame_count()
    assert frames == spec.frames(32000)  # lossless formats keep the loop sample-exact
    mp3 = FormatCache(Library(tmp_path)).deliver(record, "mp3", tmp_path)
    assert ffprobe_seconds(mp3)[1] == "mp3"
    assert audio_ops.seconds(audio_ops.load(mp3)) == pytest.approx(spec.seconds, abs=MP3_PADDING_S)


def test_names_are_plain_ascii_words() -> None:
    assert slug("Café del Mar — ambient ☀ pads!") == "cafe-del-mar-ambient"
    assert slug("") == ""


async def test_two_takes_6_db_apart_are_matched_within_1_db(
    emulator: Emulator, tmp_path: Path
) -> None:
    service = make_service(emulator, tmp_path)
    loud = await take(service, emulator, prompt="Synth pads", duration=4, seed=5)
    library = Library(tmp_path)
    quiet_file = tmp_path / "quiet.wav"
    audio_ops.export(audio_ops.load(library.audio_file(loud)).apply_gain(-6.0), quiet_file, "wav")
    quiet = library.add_run(
        None, {"prompt": "Synth pads, quieter"}, status="succeeded", audio_src=quiet_file,
        audio_format="wav", audio_seconds=4.0,
    )  # fmt: skip

    levels = match(library.audio_file(loud), library.audio_file(quiet))

    assert levels.difference_db == pytest.approx(6.0, abs=0.3)
    assert levels.a_gain_db < 0 and levels.b_gain_db == 0  # only the louder is turned down
    # What the listener hears: each take at its gain, measured again.
    heard = []
    for record, gain in ((loud, levels.a_gain_db), (quiet, levels.b_gain_db)):
        segment = audio_ops.load(library.audio_file(record)).apply_gain(gain)
        heard.append(loudness_of(audio_ops.samples(segment), segment.frame_rate))
    assert abs(heard[0] - heard[1]) <= 1.0
    assert levels.a_volume == pytest.approx(10 ** (levels.a_gain_db / 20))
