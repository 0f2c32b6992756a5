"""Export of one run: a zip with its audio and a JSON sidecar of its settings and facts."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

from services.library.files import write_atomic
from services.library.records import RunRecord, iso

MODEL = "meta/musicgen"


def tempo_key_tag(bpm: float | None, key: str | None) -> str:
    """Tempo and key as a file name says them: "97bpm-a-minor", "120.5bpm-fsharp-major"."""
    parts = [f"{round(float(bpm), 1):g}bpm"] if bpm is not None else []
    if key:
        spelled = re.sub(r"^([a-g])b\b", r"\1flat", key.lower().replace("#", "sharp"))
        parts.append(re.sub(r"[^a-z0-9]+", "-", spelled).strip("-"))
    return "-".join(parts)


def export_basename(record: RunRecord) -> str:
    """A file name a musician recognises: the prompt's first words, the measured tempo and
    key, and the run's short id."""
    words = re.sub(r"[^a-z0-9]+", "-", record.prompt.lower()).strip("-")[:40].strip("-")
    tag = tempo_key_tag(record.bpm, record.key)
    return f"musicgen-{words or 'run'}{'-' + tag if tag else ''}-{record.id[:8]}"


def sidecar(record: RunRecord, audio_name: str | None) -> dict[str, Any]:
    """Everything needed to understand, cite or repeat the run (never a token)."""
    return {
        "app": "MusicGen Studio",
        "model": MODEL,
        "library_id": record.id,
        "prediction_id": record.prediction_id,
        "replicate_url": (
            f"https://replicate.com/p/{record.prediction_id}" if record.prediction_id else None
        ),
        "status": record.status,
        # The model's inputs as the request model reads them (an old row gains later inputs'
        # defaults); nothing when Replicate had removed the inputs of an imported run.
        "settings": record.generation_request().to_dict() if record.request else {},
        "seed_used": record.seed,
        "bpm": record.bpm,  # measured
        "key": record.key,
        "predict_time": record.predict_time,
        "created_at": iso(record.created_at),
        "started_at": iso(record.started_at),
        "completed_at": iso(record.completed_at),
        "error": record.error,
        "continues_or_follows": record.parent_id,
        "favourite": record.favourite,
        "source": record.source,
        "data_removed": record.data_removed,
        "audio": (
            {
                "file": audio_name,
                "format": record.audio_format,
                "seconds": record.audio_seconds,
                "bytes": record.audio_bytes,
            }
            if audio_name
            else None
        ),
    }


def write_export(record: RunRecord, audio: Path | None, dest_dir: Path) -> Path:
    """Write `<name>.zip` into `dest_dir` atomically; a run without audio gets the sidecar only."""
    base = export_basename(record)
    audio_name = f"{base}.{record.audio_format or audio.suffix.lstrip('.')}" if audio else None
    meta = json.dumps(sidecar(record, audio_name), indent=2, ensure_ascii=False) + "\n"

    def fill(out: BinaryIO) -> None:
        # Audio is already compressed (mp3) or compresses poorly (wav): store it as is.
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
            if audio is not None and audio_name is not None:
                zf.write(audio, audio_name)
            zf.writestr(f"{base}.json", meta, compress_type=zipfile.ZIP_DEFLATED)

    return write_atomic(dest_dir / f"{base}.zip", fill)
