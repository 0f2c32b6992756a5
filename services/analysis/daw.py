"""What goes to a DAW: one stem in a chosen format, all stems as one zip, and the bundle of
everything made of a run (the mix, its stems, its MIDI, a short text of how it was made).

Every file name carries the run's measured tempo and key (see `formats.download_name`), e.g.
`dark-techno-124bpm-a-minor-seed7-2026-12-06-drums.wav`.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import BinaryIO

from services.analysis.midi import MIX, midi_entry
from services.analysis.stems import stem_file, stem_names
from services.compose import audio_ops
from services.compose.formats import check_format, download_name
from services.errors import StudioError
from services.library import Library, RunRecord
from services.library.files import copy_atomic, write_atomic


def base_name(record: RunRecord) -> str:
    """The run's download name without its extension: prompt words, tempo, key, seed, date."""
    return download_name(record, "wav").removesuffix(".wav")


def stem_download(library: Library, record: RunRecord, stem: str, fmt: str, folder: Path) -> Path:
    """One stem as wav, mp3 or flac in `folder`, under a name saying what it is."""
    fmt = check_format(fmt)
    source = stem_file(library, record, stem)
    if source is None:
        raise StudioError(f"This result has no stem {stem!r}.")
    dest = Path(folder) / f"{base_name(record)}-{stem}.{fmt}"
    if fmt == "wav":
        return copy_atomic(source, dest)
    return audio_ops.export(audio_ops.load(source), dest, fmt)


def _zip(dest: Path, files: list[tuple[Path, str]], texts: dict[str, str]) -> Path:
    def fill(out: BinaryIO) -> None:
        # Audio compresses poorly: stored as it is; text and MIDI are deflated.
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
            for path, name in files:
                zf.write(path, name)
            for name, text in texts.items():
                zf.writestr(name, text, compress_type=zipfile.ZIP_DEFLATED)

    return write_atomic(dest, fill)


def _stem_files(library: Library, record: RunRecord, base: str) -> list[tuple[Path, str]]:
    return [
        (path, f"{base}-{name}.wav")
        for name in stem_names(record)
        if (path := stem_file(library, record, name)) is not None
    ]


def stems_zip(library: Library, record: RunRecord, folder: Path) -> Path:
    """Every stem of the run as WAV in one zip in `folder`."""
    base = base_name(record)
    files = _stem_files(library, record, base)
    if not files:
        raise StudioError("This result has not been split into stems yet.")
    return _zip(Path(folder) / f"{base}-stems.zip", files, {})


def about_text(record: RunRecord) -> str:
    """The short text file of a DAW bundle: what made the run, and its tempo and key."""
    tempo = f"{record.bpm:.1f} BPM" if record.bpm is not None else "not measured"
    lines = [
        "MusicGen Studio",
        f"Prompt: {record.prompt or '(none: audio only)'}",
        f"Seed: {record.seed if record.seed is not None else 'not reported'}",
        f"Model: {record.model_version or '-'} ({record.engine}"
        + (f", {record.checkpoint}" if record.checkpoint else "")
        + ")",
        f"Tempo: {tempo}",
        f"Key: {record.key or 'not measured'}",
        f"Length: {record.audio_seconds or 0:.2f} s",
    ]
    if record.stems:
        lines.append(f"Stems ({record.stems.get('model')}): {', '.join(stem_names(record))}")
    if record.midi:
        counts = ", ".join(f"{k} {v.get('notes')} notes" for k, v in record.midi.items())
        lines.append(f"MIDI: {counts}")
    return "\n".join(lines) + "\n"


def daw_bundle(library: Library, record: RunRecord, folder: Path) -> Path:
    """A zip for a DAW in `folder`: the mix, the stems if split, the MIDI if transcribed, and
    a text file with the prompt, seed, model, tempo and key."""
    mix = library.audio_file(record)
    if mix is None:
        raise StudioError("This result has no audio to export.")
    base = base_name(record)
    files = [(mix, f"{base}.{record.audio_format or mix.suffix.lstrip('.')}")]
    files += _stem_files(library, record, base)
    for source in record.midi or {}:
        made = midi_entry(library, record, source)
        if made is not None:
            files.append((made[0], f"{base}-{source if source != MIX else 'mix'}.mid"))
    return _zip(Path(folder) / f"{base}-daw.zip", files, {f"{base}.txt": about_text(record)})
