"""The checkpoints kept loaded: at most `capacity`, the least recently used out first, and how
the current load is going (for the page, and for runs that wait for it)."""

from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from services.engines.local.loader import LoadedModel

log = logging.getLogger(__name__)

Say = Callable[[str], None]
Loader = Callable[[str, Say], LoadedModel]


@dataclass(frozen=True)
class LoadStatus:
    """The latest load: its checkpoint, whether it is still going, and its last line."""

    checkpoint: str
    state: Literal["loading", "ready", "failed"]
    message: str  # e.g. "Downloading facebook/musicgen-small: 120 / 2,300 MB", or the error


class ModelCache:
    """Loaded checkpoints, one load at a time; callers of a checkpoint being loaded wait for it.

    `capacity` is asked at each load (it depends on the device, known only once torch runs).
    A run holding an evicted model finishes with it; its memory goes when the run lets go.
    """

    def __init__(self, load: Loader, capacity: Callable[[], int]) -> None:
        self._load = load
        self._capacity = capacity
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._loading = threading.Lock()  # held for a whole load
        self._state = threading.Lock()  # guards the status and the listeners (never long)
        self._status: LoadStatus | None = None
        self._listeners: list[Say] = []

    @property
    def status(self) -> LoadStatus | None:
        with self._state:
            return self._status

    def loaded(self) -> list[str]:
        """The checkpoints in memory, least recently used first."""
        with self._state:
            return list(self._models)

    def get(self, checkpoint: str, say: Say) -> LoadedModel:
        """`checkpoint` loaded, loading it (after evicting the least recently used) if needed.

        While another load runs, `say` hears that this caller waits, then that load's lines.
        """
        with self._state:
            loaded = self._models.get(checkpoint)
            if loaded is not None:
                self._models.move_to_end(checkpoint)
                return loaded
            busy = self._status is not None and self._status.state == "loading"
            if busy:
                assert self._status is not None
                say(f"Waiting for the model {self._status.checkpoint} to finish loading...")
                say(self._status.message)
            self._listeners.append(say)
        try:
            with self._loading:
                with self._state:
                    loaded = self._models.get(checkpoint)
                    if loaded is not None:  # loaded while this caller waited
                        self._models.move_to_end(checkpoint)
                        return loaded
                    self._status = LoadStatus(checkpoint, "loading", f"Loading {checkpoint}...")
                self._evict(self._capacity() - 1)
                try:
                    loaded = self._load(checkpoint, self._tell)
                except Exception as why:
                    with self._state:
                        self._status = LoadStatus(checkpoint, "failed", str(why))
                    raise
                with self._state:
                    self._models[checkpoint] = loaded
                    self._status = LoadStatus(
                        checkpoint, "ready", f"Model {checkpoint} loaded successfully."
                    )
                self._tell(f"Model {checkpoint} loaded successfully.")
                return loaded
        finally:
            with self._state:
                self._listeners.remove(say)

    def _tell(self, line: str) -> None:
        """A line of the current load: to its status and to every caller waiting on it."""
        with self._state:
            if self._status is not None and self._status.state == "loading":
                self._status = LoadStatus(self._status.checkpoint, "loading", line)
            listeners = list(self._listeners)
        for listener in listeners:
            listener(line)

    def _evict(self, keep: int) -> None:
        """Drop the least recently used checkpoints until at most `keep` remain."""
        with self._state:
            gone = []
            while len(self._models) > max(0, keep):
                gone.append(self._models.popitem(last=False)[0])
        if gone:
            log.info("Unloaded %s (MUSICGEN_LOCAL_MAX_MODELS)", ", ".join(gone))
            gc.collect()  # the weights go now, before the next checkpoint's arrive
            _empty_device_cache()


def _empty_device_cache() -> None:
    """Hand freed GPU memory back (torch keeps it cached otherwise); nothing on a CPU."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
