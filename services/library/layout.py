"""Where the library keeps a run's files under the data folder, and how they go with it.

`audio/<run id>.<format>` the run's audio; `inputs/` the library's own copy of each run's input
clip; `compose/<run id>/` a composition's working files; `tracks/<run id>/` its stems and MIDI.
A path read from a row is handed out only when it lies inside its folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from services.library.files import remove_stale_parts
from services.library.records import RunRecord

AUDIO_DIR = "audio"
INPUTS_DIR = "inputs"  # the library's own copy of each run's input clip
# A composition's working files (a long piece's source and the clips its parts continued).
COMPOSE_DIR = "compose"
TRACKS_DIR = "tracks"  # what was made of a run: its stems and MIDI, one folder per run


class Layout:
    """The library's folders under `data_dir`; creates the audio folder and tidies it."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.audio_dir = data_dir / AUDIO_DIR
        self.inputs_dir = data_dir / INPUTS_DIR
        self.audio_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_parts(self.audio_dir)

    @property
    def served_dirs(self) -> list[Path]:
        """The folders whose files a page plays in place: the audio and the kept input clips
        (files named by unguessable run ids); never the data folder itself (the database)."""
        return [self.audio_dir, self.inputs_dir, self.data_dir / TRACKS_DIR]

    def audio_file(self, record: RunRecord, *, must_exist: bool = True) -> Path | None:
        """Where the run's audio is on disk, or None (no audio, file gone, or a bad path)."""
        if not record.audio_path:
            return None
        path = (self.data_dir / record.audio_path).resolve()
        # Rows are ours, but never hand out a path outside the audio folder.
        if path.parent != self.audio_dir.resolve():
            return None
        if must_exist and not path.is_file():
            return None
        return path

    def input_file(self, record: RunRecord) -> Path | None:
        """The run's kept input clip on disk, or None (none, gone, or not inside the library)."""
        rel = record.request.get("input_audio")
        if not isinstance(rel, str) or not rel or Path(rel).is_absolute():
            return None
        path = (self.data_dir / rel).resolve()
        try:
            path.relative_to(self.data_dir.resolve())
        except ValueError:
            return None
        return path if path.is_file() else None

    def compose_dir(self, run_id: str) -> Path:
        """Where a composition keeps its working files; removed with the entry."""
        return self.data_dir / COMPOSE_DIR / run_id

    def track_dir(self, run_id: str) -> Path:
        """Where the stems and MIDI made of a run are kept; removed with the run."""
        return self.data_dir / TRACKS_DIR / run_id

    def track_file(self, rel: str) -> Path | None:
        """A stem or MIDI file named in a record (data-folder relative), if it is on disk
        inside the tracks folder; None otherwise."""
        path = (self.data_dir / rel).resolve()
        try:
            path.relative_to((self.data_dir / TRACKS_DIR).resolve())
        except ValueError:
            return None
        return path if path.is_file() else None

    def remove_files(self, record: RunRecord) -> None:
        """Remove every file of a run whose row is gone: audio, kept input, working files."""
        kept = self.input_file(record)
        if kept is not None and kept.parent == self.inputs_dir.resolve():
            kept.unlink(missing_ok=True)  # its own copy; a clip that is another run's audio stays
        if record.audio_path:
            path = self.audio_file(record, must_exist=False)
            if path is not None:
                path.unlink(missing_ok=True)
        shutil.rmtree(self.compose_dir(record.id), ignore_errors=True)
        shutil.rmtree(self.track_dir(record.id), ignore_errors=True)
