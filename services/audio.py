"""Audio files in and out: probe, prepare input clips for the model, check downloaded outputs.

Uses ffprobe/ffmpeg (the same binaries pydub drives) as plain synchronous calls: callers run
them off the event loop. Formats are decided by decoding the content, never by file name.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import struct
import subprocess
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.errors import AudioError
from services.replicate.files import MAX_UPLOAD_BYTES

# The longest input clip sent to the model, measured by decoding (never read from a header).
CLIP_MAX_SECONDS = 600
# Past a limit, decoding stops this much after it: enough to know the clip is too long.
_PAST_LIMIT_SECONDS = 1.0
# Decoding a 100 MB file takes seconds; this only stops a wedged ffmpeg.
FFMPEG_TIMEOUT_S = 600.0

# The model's audio loader reliably reads these as they are (container, codec prefix).
_KEPT: dict[str, tuple[str, str, str]] = {
    # ffprobe format_name: (codec_name prefix, extension, content type)
    "wav": ("pcm_", "wav", "audio/x-wav"),  # x-wav: what Python maps to .wav on the model side
    "mp3": ("mp3", "mp3", "audio/mpeg"),
    "flac": ("flac", "flac", "audio/flac"),
}
# Everything else is transcoded to FLAC: lossless, and read by the model's loader.
_CONVERTED_EXT, _CONVERTED_TYPE = "flac", "audio/flac"
# Containers whose header states the exact length, so a shorter decode means a cut-off file.
# (mp3 and raw AAC lengths are estimates from the bitrate and can be far off in good files.)
_EXACT_LENGTH_FORMATS = frozenset({"wav", "flac", "aiff", "w64", "mov,mp4,m4a,3gp,3g2,mj2"})
_FRIENDLY_FORMATS = {
    "matroska,webm": "webm",
    "mov,mp4,m4a,3gp,3g2,mj2": "m4a",
}
_IMAGE_CODECS = frozenset({"png", "mjpeg", "jpegls", "gif", "webp", "bmp", "tiff", "ljpeg"})
_KNOWN = "wav, mp3, flac, ogg, m4a or webm"


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds; `seconds` is measured by decoding, not read from the header."""

    seconds: float
    channels: int
    sample_rate: int
    codec: str  # ffprobe codec name: pcm_s16le, mp3, flac, vorbis, opus, aac, ...
    format: str  # container, friendly: wav, mp3, flac, ogg, m4a, webm, ...
    size_bytes: int


@dataclass(frozen=True)
class PreparedAudio:
    """An input clip ready to send; `path` always ends in the extension of its content."""

    path: Path
    content_type: str
    size_bytes: int
    seconds: float
    original_format: str  # "container/codec" of what the user gave, e.g. "webm/opus"
    converted: bool


class _Unreadable(Exception):
    """Why a file is not usable audio, in words that finish "This file isn't ...: "."""


# -- running ffmpeg ------------------------------------------------------------------------


def _tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise AudioError(f"{name} is not installed on this server, so audio can't be read.")
    return found


def _source(path: Path) -> str:
    # The file: protocol stops ffmpeg reading a name like "-x" or "http:..." as anything else.
    return f"file:{path.resolve()}"


def _ffprobe(path: Path) -> dict[str, Any]:
    command = [_tool("ffprobe"), "-v", "error", "-print_format", "json"]
    command += ["-show_format", "-show_streams", _source(path)]
    try:
        done = subprocess.run(command, capture_output=True, timeout=FFMPEG_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise _Unreadable("reading it took far too long; it may be damaged.") from None
    if done.returncode != 0:
        raise _Unreadable(f"it isn't in an audio format we know ({_KNOWN}), or it is damaged.")
    parsed: dict[str, Any] = json.loads(done.stdout or b"{}")
    return parsed


def _decoded_seconds(
    path: Path, sample_rate: int, *, stop_after: float | None = None, whole_wav: bool = False
) -> float:
    """Decode the first audio stream to mono PCM and count its samples: the real length.

    `stop_after` ends decoding after that many seconds (a long file is then measured only that
    far, quickly); `whole_wav` reads a WAV's sound to the end of the file, whatever its header
    claims.
    """
    command = [_tool("ffmpeg"), "-nostdin", "-v", "error"]
    if whole_wav:
        command += ["-ignore_length", "1"]
    command += ["-i", _source(path), "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(sample_rate)]
    if stop_after is not None:
        command += ["-t", f"{stop_after:.3f}"]
    command += ["-f", "s16le", "-c:a", "pcm_s16le", "pipe:1"]
    total = 0
    # Streamed and counted, never held: a long clip decodes to hundreds of megabytes.
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as process:
        watchdog = threading.Timer(FFMPEG_TIMEOUT_S, process.kill)
        watchdog.start()
        try:
            assert process.stdout is not None
            while chunk := process.stdout.read(1 << 20):
                total += len(chunk)
            returncode = process.wait()
        finally:
            watchdog.cancel()
    if returncode != 0:
        raise _Unreadable("it is damaged: its sound could not be decoded.")
    return total / 2 / sample_rate


def _is_chunk_id(chunk: bytes) -> bool:
    return len(chunk) == 4 and all(0x20 <= byte <= 0x7E for byte in chunk)


def _whole_chunks_from(fh: Any, pos: int, size: int) -> bool:
    """Whether the bytes from `pos` to the end of the file are whole RIFF chunks."""
    while pos + 8 <= size:
        fh.seek(pos)
        chunk, length = struct.unpack("<4sI", fh.read(8))
        # Some writers leave out the pad byte after an odd-sized last chunk: allow for it.
        if not _is_chunk_id(chunk) or pos + 8 + length > size + 1:
            return False
        pos += 8 + length + (length & 1)
    return True  # at most a few stray bytes are left: no sound worth counting


def _wav_understates(path: Path) -> bool:
    """True when a WAV's data chunk claims less sound than the file holds after it.

    ffmpeg (and most players) believe the claim and stop early, so such a file must be
    measured, and sent, whole. Bytes after the claimed end that are further RIFF chunks
    (metadata such as LIST or id3) are not sound, and leave the claim believable.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return False
        pos = 12
        while pos + 8 <= size:
            fh.seek(pos)
            chunk, length = struct.unpack("<4sI", fh.read(8))
            if chunk == b"data":
                if length in (0, 0xFFFFFFFF):  # "unknown length": ffmpeg reads to the end
                    return False
                end = pos + 8 + length
                return not (
                    _whole_chunks_from(fh, end, size) or _whole_chunks_from(fh, end + 1, size)
                )
            pos += 8 + length + (length & 1)
    return False


def _describe_streams(format_name: str, streams: list[dict[str, Any]]) -> str:
    """Why a file without an audio stream is not audio, e.g. 'it is an image'."""
    if format_name == "tty":  # ffmpeg shows plain text files as ANSI-art video
        return "it is a text file, with no sound in it."
    video = [s for s in streams if s.get("codec_type") == "video"]
    if video and all(s.get("codec_name") in _IMAGE_CODECS for s in video):
        return "it is an image, with no sound in it."
    if video:
        return "it is a video without a sound track."
    return "it has no sound in it."


def _friendly(format_name: str) -> str:
    return _FRIENDLY_FORMATS.get(format_name, format_name.split(",")[0])


def _header_seconds(probed: dict[str, Any], stream: dict[str, Any]) -> float | None:
    for value in (probed.get("format", {}).get("duration"), stream.get("duration")):
        if value is None:
            continue
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(seconds) and seconds > 0:
            return seconds
    return None


@dataclass(frozen=True)
class MeasuredClip:
    """A clip as measured once by decoding: what validation and the upload both need."""

    info: AudioInfo
    format_name: str  # ffprobe's raw format name
    whole_wav: bool  # a WAV whose header understates its sound: read to the end of the file
    past_limit: bool  # decoding stopped after the limit: the clip is longer than that


def _inspect(path: Path, max_seconds: float | None = None) -> MeasuredClip:
    """Probe and decode (all of it, or until just past `max_seconds`)."""
    try:
        size = path.stat().st_size
    except OSError:
        raise _Unreadable("the file could not be found or opened.") from None
    if not path.is_file():
        raise _Unreadable("it is not a file.")
    if size == 0:
        raise _Unreadable("the file is empty.")
    probed = _ffprobe(path)
    streams = probed.get("streams", [])
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    format_name = str(probed.get("format", {}).get("format_name", "unknown"))
    if not audio:
        raise _Unreadable(_describe_streams(format_name, streams))
    stream = audio[0]
    sample_rate = int(stream.get("sample_rate") or 0) or 48000
    whole_wav = format_name == "wav" and _wav_understates(path)
    stop_after = None if max_seconds is None else max_seconds + _PAST_LIMIT_SECONDS
    seconds = _decoded_seconds(path, sample_rate, stop_after=stop_after, whole_wav=whole_wav)
    if seconds <= 0:
        raise _Unreadable("no sound could be decoded from it; it may be damaged or cut off.")
    past_limit = max_seconds is not None and seconds > max_seconds
    promised = _header_seconds(probed, stream)
    if (
        not past_limit
        and format_name in _EXACT_LENGTH_FORMATS
        and promised is not None
        and promised - seconds > max(0.5, 0.02 * promised)
    ):
        raise _Unreadable(
            f"it seems cut off: it should last {promised:.1f} s, but only {seconds:.1f} s "
            "of sound could be read. Export or record it again."
        )
    info = AudioInfo(
        seconds=seconds,
        channels=int(stream.get("channels") or 0),
        sample_rate=sample_rate,
        codec=str(stream.get("codec_name", "unknown")),
        format=_friendly(format_name),
        size_bytes=size,
    )
    return MeasuredClip(info, format_name, whole_wav, past_limit)


def measure(path: str | os.PathLike[str], *, max_seconds: float | None = None) -> MeasuredClip:
    """Measure an audio file by decoding it; AudioError if it is not audio we can read.

    With `max_seconds`, decoding stops just past it, so a file that is too long is found out
    quickly: its `seconds` is then above `max_seconds` but not its full length.
    """
    try:
        return _inspect(Path(path), max_seconds)
    except _Unreadable as why:
        raise AudioError(f"This file isn't audio we can read: {why}") from None


def probe(path: str | os.PathLike[str], *, max_seconds: float | None = None) -> AudioInfo:
    """`measure`'s facts about the sound: length, channels, rate, codec, size."""
    return measure(path, max_seconds=max_seconds).info


# -- input clips ---------------------------------------------------------------------------


def _size_text(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f}".removesuffix(".0") + " MB"
    return f"{size / 1024:.1f}".removesuffix(".0") + " KB"


def too_large_message(
    size: int, max_bytes: int = MAX_UPLOAD_BYTES, *, converted: bool = False
) -> str:
    """Why a clip of `size` bytes is refused, and what to do about it."""
    what = "Converted for the model, this clip becomes" if converted else "This file is"
    return (
        f"{what} {_size_text(size)}, above the {_size_text(max_bytes)} limit for input audio. "
        "Trim it to the part you need"
        + ("." if converted else ", or export it compressed (for example as mp3).")
    )


def _minutes(seconds: float) -> str:
    minutes = seconds / 60
    return f"{minutes:g} minutes" if minutes >= 1 else f"{seconds:g} seconds"


def too_long_message(max_seconds: float = CLIP_MAX_SECONDS) -> str:
    """Why a clip longer than `max_seconds` (measured by decoding) is refused."""
    return (
        f"This clip lasts more than {_minutes(max_seconds)}, the limit for input audio. "
        "Trim it to the part you need (for a melody, the part that fits your piece) and add "
        "it again."
    )


def _check_size(size: int, max_bytes: int, *, converted: bool = False) -> None:
    if size > max_bytes:
        raise AudioError(too_large_message(size, max_bytes, converted=converted))


def _safe_stem(path: Path) -> str:
    """A file name stem that any upload accepts."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem).strip("._")
    return stem[:80] or "input"


def _unique(workdir: Path, stem: str, ext: str) -> Path:
    candidate = workdir / f"{stem}.{ext}"
    if candidate.exists():
        candidate = workdir / f"{stem}-{uuid.uuid4().hex[:8]}.{ext}"
    return candidate


def _named_copy(source: Path, workdir: Path, ext: str) -> Path:
    """The file itself when its name already says what it is, else a copy named rightly."""
    if source.suffix.lower() == f".{ext}":
        return source
    target = _unique(workdir, _safe_stem(source), ext)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    return target


def _to_flac(source: Path, target: Path, *, whole_wav: bool = False) -> None:
    command = [_tool("ffmpeg"), "-nostdin", "-v", "error", "-y"]
    if whole_wav:  # the sound the clip was measured by, not the part its header admits to
        command += ["-ignore_length", "1"]
    command += ["-i", _source(source)]
    # 16-bit is plenty for a melody or a prompt clip, and keeps more clips small enough to
    # travel as data URLs (FLAC would otherwise keep 24-32 bits from lossy float decoders).
    command += ["-map", "0:a:0", "-vn", "-c:a", "flac", "-sample_fmt", "s16"]
    command += ["-f", "flac", _source(target)]
    try:
        done = subprocess.run(command, capture_output=True, timeout=FFMPEG_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise AudioError("Converting this clip took far too long; try a shorter one.") from None
    if done.returncode != 0 or not target.is_file() or target.stat().st_size == 0:
        raise AudioError(
            "This clip could not be converted for the model; export it as wav, mp3 or flac "
            "and try again."
        )


def prepare_input_audio(
    path: str | os.PathLike[str],
    workdir: str | os.PathLike[str],
    *,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_seconds: float = CLIP_MAX_SECONDS,
    measured: MeasuredClip | None = None,
) -> PreparedAudio:
    """Make a clip ready to upload: wav/mp3/flac as they are, anything else as FLAC.

    Refuses files above `max_bytes` before reading them, clips lasting more than
    `max_seconds` (measured by decoding, which stops just past the limit), and anything that
    isn't audio. A WAV whose header understates its sound is sent as FLAC of all of it, so
    the model gets exactly what was measured. New files (conversions, rightly named copies)
    go into `workdir`. `measured`: the clip as validation already measured it (not decoded again).
    """
    source, folder = Path(path), Path(workdir)
    try:
        _check_size(source.stat().st_size, max_bytes)
    except OSError:
        raise AudioError("This file isn't audio we can read: it could not be found.") from None
    inspected = measured or measure(source, max_seconds=max_seconds)
    if inspected.past_limit:
        raise AudioError(too_long_message(max_seconds))
    info, format_name = inspected.info, inspected.format_name
    original = f"{info.format}/{info.codec}"
    folder.mkdir(parents=True, exist_ok=True)
    kept = _KEPT.get(format_name)
    if kept and info.codec.startswith(kept[0]) and not inspected.whole_wav:
        _, ext, content_type = kept
        target = _named_copy(source, folder, ext)
        return PreparedAudio(target, content_type, info.size_bytes, info.seconds, original, False)
    target = _unique(folder, _safe_stem(source), _CONVERTED_EXT)
    _to_flac(source, target, whole_wav=inspected.whole_wav)
    size = target.stat().st_size
    _check_size(size, max_bytes, converted=True)
    return PreparedAudio(target, _CONVERTED_TYPE, size, info.seconds, original, True)


# -- outputs -------------------------------------------------------------------------------


def _pcm_codec(tag: int, bits: int) -> str:
    """ffprobe's name for a WAV's PCM codec, from its format tag and sample size."""
    if not bits:
        return "pcm"
    if tag == 3:
        return f"pcm_f{bits}le"
    return "pcm_u8" if bits == 8 else f"pcm_s{bits}le"


def _pcm_wav_info(path: Path) -> AudioInfo | None:
    """A complete PCM WAV read from its header, or None (not one, or its data is cut off).

    PCM needs no decoding: a well-formed header whose data chunk is all there is playable
    audio of a known length. Checking it in-process spares two ffmpeg start-ups per run.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        byte_rate = channels = rate = bits = tag = 0
        pos = 12
        while pos + 8 <= size:
            fh.seek(pos)
            chunk, length = struct.unpack("<4sI", fh.read(8))
            if chunk == b"fmt ":
                fmt = fh.read(min(length, 40))
                if len(fmt) < 16:
                    return None
                tag, channels, rate, byte_rate, _, bits = struct.unpack("<HHIIHH", fmt[:16])
                if tag == 0xFFFE and len(fmt) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the real tag
                    tag = struct.unpack("<H", fmt[24:26])[0]  # opens its sub-format GUID
                if tag not in (1, 3) or not (channels and rate and byte_rate):
                    return None
            elif chunk == b"data":
                if not byte_rate or length == 0 or pos + 8 + length > size:
                    return None
                return AudioInfo(
                    length / byte_rate, channels, rate, _pcm_codec(tag, bits), "wav", size
                )
            pos += 8 + length + (length & 1)
    return None


def check_output(
    path: str | os.PathLike[str], expected_seconds: float, *, tolerance: float = 1.0
) -> AudioInfo:
    """Check a downloaded output is audio lasting at least `expected_seconds` less `tolerance`.

    In continuation mode the expected length is the requested `duration` (the total). A longer
    file is kept: it is still the musician's music, and nothing they made is thrown away.
    """
    try:
        info = _pcm_wav_info(Path(path)) or _inspect(Path(path)).info
    except (_Unreadable, OSError) as why:
        raise AudioError(f"The generated file isn't audio we can read: {why}") from None
    if info.seconds < expected_seconds - tolerance:
        raise AudioError(
            f"The generated audio lasts {info.seconds:.1f} s, but {expected_seconds:g} s were "
            "asked for. The file may have arrived incomplete."
        )
    return info


# The WAV codecs every browser plays as they are, as ffprobe names them.
_BROWSER_WAV_CODECS = frozenset({"pcm_s16le", "pcm_s24le", "pcm_f32le", "pcm_u8"})


def _mpeg_audio_start(head: bytes) -> bool:
    """An ID3 tag, or an MPEG audio frame's sync word followed by a Layer III header."""
    if head[:3] == b"ID3":
        return True
    return len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE6 == 0xE2


def plays_as_is(path: str | os.PathLike[str]) -> bool:
    """True when the file's header shows a browser plays it as it is: a complete PCM WAV, or
    an MP3 named .mp3. Read in-process, without an ffprobe; False means "not known"."""
    path = Path(path)
    try:
        suffix = path.suffix.lower()
        if suffix == ".wav":
            info = _pcm_wav_info(path)
            return info is not None and info.codec in _BROWSER_WAV_CODECS
        if suffix == ".mp3":
            with open(path, "rb") as fh:
                return _mpeg_audio_start(fh.read(4))
    except OSError:
        return False
    return False
