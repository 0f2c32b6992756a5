"""Audio in and out, with real files made by ffmpeg and pydub, checked by a separate ffprobe."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import pytest
from pydub.generators import Sine

from services.audio import (
    CLIP_MAX_SECONDS,
    MAX_UPLOAD_BYTES,
    check_output,
    plays_as_is,
    prepare_input_audio,
    probe,
)
from services.errors import AudioError

SECONDS = 3.0
TONE = ["-f", "lavfi", "-i", f"sine=frequency=440:duration={SECONDS}:sample_rate=44100"]

# name -> (ffmpeg output options, codec ffprobe must report, kept as it is?)
FORMATS: dict[str, tuple[list[str], str, bool]] = {
    "tone.wav": (["-c:a", "pcm_s16le"], "pcm_s16le", True),
    "tone.mp3": (["-c:a", "libmp3lame", "-b:a", "128k"], "mp3", True),
    "tone.flac": (["-c:a", "flac"], "flac", True),
    "vorbis.ogg": (["-c:a", "libvorbis"], "vorbis", False),
    "opus.ogg": (["-c:a", "libopus"], "opus", False),
    "tone.m4a": (["-c:a", "aac"], "aac", False),
    "tone.webm": (["-c:a", "libopus"], "opus", False),
    # What a browser's MediaRecorder makes: webm/opus streamed live, no length in its header.
    "recording.webm": (["-c:a", "libopus", "-live", "1"], "opus", False),
}


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def ffprobe(path: Path) -> dict:
    """An independent look at a file: its first audio stream and its length."""
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", path],
        capture_output=True,
        check=True,
    )
    probed = json.loads(done.stdout)
    stream = next(s for s in probed["streams"] if s["codec_type"] == "audio")
    return {"codec": stream["codec_name"], "seconds": float(probed["format"]["duration"])}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    for name, (options, _, _) in FORMATS.items():
        ffmpeg(*TONE, "-ac", "2", *options, str(folder / name))
    return folder


@pytest.fixture(scope="module")
def junk(tmp_path_factory) -> Path:
    """Files that are not usable audio, each made for real."""
    folder = tmp_path_factory.mktemp("junk")
    (folder / "notes.txt").write_text("Verse, chorus, verse.\n" * 50)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "noise.mp3").write_bytes(bytes(range(256)) * 64)
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=64x64", "-frames:v", "1", str(folder / "cover.png"))
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc=duration=1:size=64x64:rate=10",
        "-c:v", "mpeg4", str(folder / "silent-film.mp4"),
    )  # fmt: skip
    ffmpeg(*TONE, "-c:a", "pcm_s16le", str(folder / "whole.wav"))
    whole = (folder / "whole.wav").read_bytes()
    (folder / "cut.wav").write_bytes(whole[: len(whole) // 2])
    (folder / "header-only.wav").write_bytes(whole[:44])
    ffmpeg(*TONE, "-c:a", "flac", str(folder / "whole.flac"))
    flac = (folder / "whole.flac").read_bytes()
    (folder / "cut.flac").write_bytes(flac[: len(flac) // 3])
    ffmpeg(*TONE, "-c:a", "aac", str(folder / "whole.m4a"))
    m4a = (folder / "whole.m4a").read_bytes()
    (folder / "cut.m4a").write_bytes(m4a[: len(m4a) // 2])
    return folder


# -- probe ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FORMATS)
def test_probe_measures_each_accepted_format(clips, name):
    info = probe(clips / name)
    assert info.seconds == pytest.approx(SECONDS, abs=0.1)
    assert info.channels == 2
    assert info.codec == FORMATS[name][1]
    assert info.size_bytes == (clips / name).stat().st_size


def test_probe_measures_a_browser_recording_without_a_length_header(clips):
    recording = clips / "recording.webm"
    header = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", recording],
        capture_output=True,
        check=True,
    )
    assert "duration" not in json.loads(header.stdout)["format"]  # like MediaRecorder output
    info = probe(recording)
    assert info.seconds == pytest.approx(SECONDS, abs=0.1)
    assert (info.format, info.codec) == ("webm", "opus")


def test_probe_reads_content_not_the_file_name(clips, tmp_path):
    disguised = tmp_path / "upload.mp3"
    disguised.write_bytes((clips / "opus.ogg").read_bytes())
    info = probe(disguised)
    assert (info.format, info.codec) == ("ogg", "opus")


def test_a_pydub_tone_is_measured(tmp_path):
    path = tmp_path / "pydub.wav"
    Sine(220).to_audio_segment(duration=1500).export(path, format="wav")
    assert probe(path).seconds == pytest.approx(1.5, abs=0.01)


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("notes.txt", "it is a text file, with no sound in it."),
        ("empty.wav", "the file is empty."),
        ("noise.mp3", "isn't in an audio format we know (wav, mp3, flac, ogg, m4a or webm)"),
        ("cover.png", "it is an image, with no sound in it."),
        ("silent-film.mp4", "it is a video without a sound track."),
        ("header-only.wav", "or it is damaged"),
        ("cut.flac", "it seems cut off: it should last 3.0 s, but only"),
        ("cut.m4a", "or it is damaged"),
        ("missing.wav", "could not be found"),
    ],
)
def test_what_is_not_audio_is_refused_clearly(junk, name, says):
    with pytest.raises(AudioError) as caught:
        probe(junk / name)
    message = str(caught.value)
    assert message.startswith("This file isn't audio we can read: ")
    assert says in message
    assert str(junk) not in message  # no server paths in what the musician reads


def test_a_cut_off_wav_counts_only_the_sound_that_is_there(junk):
    # WAV lengths come from the data actually present, so the clip rules see the truth.
    assert probe(junk / "cut.wav").seconds == pytest.approx(SECONDS / 2, abs=0.01)


def test_a_file_named_like_an_option_is_still_just_a_file(clips, tmp_path, monkeypatch):
    (tmp_path / "-i").write_bytes((clips / "tone.wav").read_bytes())
    monkeypatch.chdir(tmp_path)
    assert probe("-i").seconds == pytest.approx(SECONDS, abs=0.01)


def _data_chunk(wav: bytes) -> int:
    """Where a WAV's data chunk header starts."""
    pos = 12
    while True:
        chunk, length = struct.unpack("<4sI", wav[pos : pos + 8])
        if chunk == b"data":
            return pos
        pos += 8 + length + (length & 1)


def lying_wav(source: Path, dest: Path, claimed_seconds: float) -> Path:
    """A copy of a mono 16-bit 44.1 kHz WAV whose header claims `claimed_seconds` of sound."""
    wav = bytearray(source.read_bytes())
    pos = _data_chunk(bytes(wav))
    claimed = int(claimed_seconds * 44100) * 2
    struct.pack_into("<I", wav, pos + 4, claimed)
    struct.pack_into("<I", wav, 4, pos + claimed)  # the RIFF size agrees with the lie
    dest.write_bytes(wav)
    return dest


@pytest.fixture(scope="module")
def mono_wav(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mono") / "tone.wav"
    ffmpeg(*TONE, "-ac", "1", "-c:a", "pcm_s16le", str(path))
    return path


def test_a_wav_whose_header_claims_less_sound_is_measured_whole(mono_wav, tmp_path):
    lie = lying_wav(mono_wav, tmp_path / "lie.wav", 0.5)
    assert ffprobe(lie)["seconds"] == pytest.approx(0.5, abs=0.01)  # players believe it
    assert probe(lie).seconds == pytest.approx(SECONDS, abs=0.01)
    # What is sent is what was measured: all of the sound, as FLAC.
    prepared = prepare_input_audio(lie, tmp_path / "work")
    assert prepared.converted and prepared.content_type == "audio/flac"
    assert prepared.seconds == pytest.approx(SECONDS, abs=0.01)
    assert ffprobe(prepared.path)["seconds"] == pytest.approx(SECONDS, abs=0.01)


def test_a_wav_whose_header_claims_more_sound_is_measured_by_what_is_there(mono_wav, tmp_path):
    lie = lying_wav(mono_wav, tmp_path / "hour.wav", 3600)
    assert probe(lie).seconds == pytest.approx(SECONDS, abs=0.01)


def test_metadata_after_a_wavs_sound_is_not_counted_as_sound(mono_wav, tmp_path):
    wav = bytearray(mono_wav.read_bytes())
    tail = b"LIST" + struct.pack("<I", 4000) + b"INFO" + b"\0" * 3996
    wav += tail
    struct.pack_into("<I", wav, 4, len(wav) - 8)
    tagged = tmp_path / "tagged.wav"
    tagged.write_bytes(wav)
    assert probe(tagged).seconds == pytest.approx(SECONDS, abs=0.01)
    prepared = prepare_input_audio(tagged, tmp_path / "work")
    assert not prepared.converted and prepared.path == tagged  # sent untouched


def test_decoding_stops_just_past_a_limit(clips):
    assert probe(clips / "tone.mp3", max_seconds=1).seconds == pytest.approx(2, abs=0.05)
    assert probe(clips / "tone.mp3", max_seconds=10).seconds == pytest.approx(SECONDS, abs=0.1)


def test_a_clip_longer_than_the_limit_is_refused_before_preparing(clips, tmp_path):
    assert CLIP_MAX_SECONDS == 600
    with pytest.raises(AudioError) as caught:
        prepare_input_audio(clips / "tone.flac", tmp_path / "work", max_seconds=2)
    assert str(caught.value) == (
        "This clip lasts more than 2 seconds, the limit for input audio. Trim it to the part "
        "you need (for a melody, the part that fits your piece) and add it again."
    )
    assert not (tmp_path / "work").exists()


def test_a_lying_wav_above_the_limit_is_refused(mono_wav, tmp_path):
    lie = lying_wav(mono_wav, tmp_path / "lie.wav", 0.5)
    with pytest.raises(AudioError, match="lasts more than 2 seconds"):
        prepare_input_audio(lie, tmp_path / "work", max_seconds=2)


# -- preparing input clips -----------------------------------------------------------------


@pytest.mark.parametrize("name", FORMATS)
def test_each_accepted_format_prepares_to_audio_the_model_reads(clips, tmp_path, name):
    prepared = prepare_input_audio(clips / name, tmp_path)
    _, codec, kept = FORMATS[name]
    seen = ffprobe(prepared.path)
    assert seen["seconds"] == pytest.approx(SECONDS, abs=0.1)
    assert prepared.seconds == pytest.approx(SECONDS, abs=0.1)
    assert prepared.size_bytes == prepared.path.stat().st_size
    assert prepared.converted is not kept
    if kept:
        assert prepared.path == clips / name  # sent untouched
        assert seen["codec"] == codec
    else:
        assert prepared.path.parent == tmp_path
        assert (seen["codec"], prepared.path.suffix, prepared.content_type) == (
            "flac",
            ".flac",
            "audio/flac",
        )
    assert prepared.original_format.endswith("/" + codec)


def test_content_types_match_what_is_sent(clips, tmp_path):
    types = {n: prepare_input_audio(clips / n, tmp_path).content_type for n in FORMATS}
    assert types["tone.wav"] == "audio/x-wav"
    assert types["tone.mp3"] == "audio/mpeg"
    assert types["tone.flac"] == "audio/flac"
    assert types["recording.webm"] == "audio/flac"


def test_a_misnamed_file_is_sent_under_a_name_that_says_what_it_is(clips, tmp_path):
    source = tmp_path / "in" / "my take.ogg"
    source.parent.mkdir()
    source.write_bytes((clips / "tone.mp3").read_bytes())
    prepared = prepare_input_audio(source, tmp_path / "work")
    assert prepared.path.name == "my_take.mp3"
    assert prepared.content_type == "audio/mpeg" and not prepared.converted
    assert prepared.path.read_bytes() == source.read_bytes()


def test_a_browser_recording_without_extension_is_converted(clips, tmp_path):
    source = tmp_path / "blob"
    source.write_bytes((clips / "recording.webm").read_bytes())
    prepared = prepare_input_audio(source, tmp_path / "work")
    assert prepared.path.name == "blob.flac"
    assert prepared.original_format == "webm/opus"
    assert ffprobe(prepared.path)["seconds"] == pytest.approx(SECONDS, abs=0.1)


def test_garbage_is_refused_before_preparing(junk, tmp_path):
    with pytest.raises(AudioError, match="This file isn't audio we can read: it is an image"):
        prepare_input_audio(junk / "cover.png", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_files_above_the_size_limit_are_refused_before_reading(tmp_path):
    assert MAX_UPLOAD_BYTES == 100 * 1024 * 1024
    big = tmp_path / "big.wav"
    big.write_bytes(b"\0" * 300_000)  # not even audio: the size is checked first
    with pytest.raises(AudioError) as caught:
        prepare_input_audio(big, tmp_path / "work", max_bytes=200 * 1024)
    assert str(caught.value) == (
        "This file is 293 KB, above the 200 KB limit for input audio. Trim it to the part "
        "you need, or export it compressed (for example as mp3)."
    )


def test_the_default_limit_is_100_mb(tmp_path):
    big = tmp_path / "huge.flac"
    with big.open("wb") as sparse:  # a sparse file: 100 MB + 1 byte without writing them
        sparse.truncate(MAX_UPLOAD_BYTES + 1)
    with pytest.raises(AudioError, match=r"above the 100 MB limit for input audio"):
        prepare_input_audio(big, tmp_path / "work")


def test_a_conversion_above_the_limit_is_refused(clips, tmp_path):
    source = clips / "opus.ogg"  # small as opus, several times larger as FLAC
    limit = source.stat().st_size + 1
    with pytest.raises(AudioError, match=r"Converted for the model, this clip becomes .* limit"):
        prepare_input_audio(source, tmp_path, max_bytes=limit)


# -- outputs -------------------------------------------------------------------------------


def test_an_output_of_the_asked_length_passes(clips):
    info = check_output(clips / "tone.wav", SECONDS)
    assert info.seconds == pytest.approx(SECONDS, abs=0.01) and info.channels == 2
    assert check_output(clips / "tone.mp3", 3).codec == "mp3"


def test_an_output_far_too_short_is_refused(clips):
    with pytest.raises(AudioError) as caught:
        check_output(clips / "tone.wav", 8)
    assert str(caught.value) == (
        "The generated audio lasts 3.0 s, but 8 s were asked for. "
        "The file may have arrived incomplete."
    )


def test_an_output_longer_than_asked_is_kept(clips):
    # Longer than asked is still the musician's music: never thrown away over a length mismatch.
    assert check_output(clips / "tone.wav", 1).seconds == pytest.approx(SECONDS)


def test_the_tolerance_is_adjustable(clips):
    assert check_output(clips / "tone.wav", 4, tolerance=1.5).seconds == pytest.approx(SECONDS)


@pytest.mark.parametrize("name", ["empty.wav", "notes.txt", "cut.flac", "cut.m4a"])
def test_a_broken_output_is_refused(junk, name):
    with pytest.raises(AudioError, match=r"^The generated file isn't audio we can read: "):
        check_output(junk / name, 3)


def test_a_wav_output_cut_off_in_transit_is_refused(clips, tmp_path):
    whole = (clips / "tone.wav").read_bytes()
    cut = tmp_path / "out.wav"
    cut.write_bytes(whole[: len(whole) // 2])  # the header still promises 3 s
    with pytest.raises(AudioError, match="arrived incomplete"):
        check_output(cut, SECONDS)


def test_a_whole_wav_output_is_measured_exactly(clips):
    info = check_output(clips / "tone.wav", SECONDS)
    assert (info.seconds, info.channels, info.format) == (
        pytest.approx(SECONDS, abs=0.01),
        2,
        "wav",
    )


# -- what a browser plays as it is ---------------------------------------------------------


@pytest.fixture(scope="module")
def wav_kinds(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wav-kinds")
    for codec in ("pcm_s16le", "pcm_s24le", "pcm_f32le", "pcm_u8", "pcm_s32le", "pcm_mulaw"):
        ffmpeg(*TONE, "-c:a", codec, str(folder / f"{codec}.wav"))
    ffmpeg(*TONE, "-c:a", "pcm_s16le", "-f", "wav", str(folder / "wav-named.mp3"))
    ffmpeg(*TONE, "-c:a", "libmp3lame", "-f", "mp3", str(folder / "mp3-named.wav"))
    ffmpeg(*TONE, "-c:a", "libmp3lame", "-id3v2_version", "0", str(folder / "no-tag.mp3"))
    return folder


def test_a_header_says_playable_only_where_ffprobe_agrees(clips, junk, wav_kinds):
    # The player skips Gradio's ffprobe when plays_as_is says yes: it must never say yes to a
    # file Gradio's own check would convert, and must say yes to what the studio writes.
    from gradio.processing_utils import PLAYABLE_AUDIO_CODECS, audio_is_playable

    files = [p for folder in (clips, junk, wav_kinds) for p in sorted(folder.iterdir())]
    said_yes = {p.name for p in files if plays_as_is(p)}
    for path in files:
        if path.name in said_yes:
            assert audio_is_playable(str(path)), path.name
            codec = ffprobe(path)["codec"]
            assert (path.suffix, codec) in PLAYABLE_AUDIO_CODECS, path.name
    assert said_yes == {
        "tone.wav", "tone.mp3", "whole.wav", "no-tag.mp3",
        "pcm_s16le.wav", "pcm_s24le.wav", "pcm_f32le.wav", "pcm_u8.wav",
    }  # fmt: skip
