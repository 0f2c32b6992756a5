"""Measure a filed run's tempo and key and keep them in its record.

Called right after a run's audio is filed (the run is already safe in the library): a failure
here is logged and leaves the record without `bpm`/`key`, never unfiled.
"""

from __future__ import annotations

import logging

from services.analysis.tempo_key import measure, warm_up
from services.library import Library, RunNotFound, RunRecord

log = logging.getLogger(__name__)


def measure_filed(library: Library, run_id: str) -> RunRecord | None:
    """The run with its measured `bpm` and `key` stored; None if it could not be measured.

    CPU work (decoding, beat tracking): call it off the event loop.
    """
    record = library.get(run_id)
    path = library.audio_file(record) if record is not None else None
    if path is None:
        return None
    try:
        found = measure(path)
        return library.update(run_id, bpm=found.bpm, key=found.key)
    except RunNotFound:
        return None  # deleted meanwhile
    except Exception:  # any decoder or analysis failure: the take stays as it is
        log.exception("Could not measure the tempo and key of run %s", run_id)
        return None


def warm_up_quietly() -> None:
    """`warm_up`, whose failure only means the first measurement is slower."""
    try:
        warm_up()
    except Exception:
        log.exception("Could not warm up the tempo and key analysis")
