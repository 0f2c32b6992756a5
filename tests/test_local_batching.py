"""Batched passes on the local engine (tiny checkpoints, real transformers `generate`): each row
keeps its seed, settings, length, progress and cancel; visitors take turns in the queue."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")


from services.engines.local import LocalConfig, LocalEngine
from services.engines.protocol import EngineRun, Turn
from services.errors import StudioError
from services.events import RunUpdate
from services.library import Library
from services.musicgen import GenerationRequest
from tests.support.audio_files import samples
from tests.support.local_engines import tiny_engine, tiny_request
from tests.support.services import make_service
from tests.support.tiny_musicgen import TinyCheckpoints

RATE = 32_000


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def engine(tiny_musicgen: TinyCheckpoints) -> Iterator[LocalEngine]:
    # fp32: a row's numbers then do not depend on its neighbours (int8's dynamic quantization
    # scales activations over the whole batch, so a take made beside others drifts slightly).
    with tiny_engine(tiny_musicgen, preview_seconds=0, precision="fp32") as local:
        yield local


@pytest.fixture
def generate_calls(engine: LocalEngine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The rows of every call of the real model's `generate`, in order."""
    model = engine.preload().model
    real = model.generate
    calls: list[int] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(int(kwargs["input_ids"].shape[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "generate", counting)
    return calls


def request(**kw: Any) -> GenerationRequest:
    return tiny_request(**{"normalization_strategy": "clip", **kw})


async def follow(engine: LocalEngine, run: EngineRun, workdir: Path) -> list[RunUpdate]:
    return [u async for u in engine.follow(run, started=time.monotonic(), workdir=workdir)]


async def make(
    engine: LocalEngine, requests: list[GenerationRequest], root: Path, *, group: str | None
) -> list[list[RunUpdate]]:
    """Start `requests` (as one group when `group` is given) and follow each to its end."""
    runs = []
    for i, req in enumerate(requests):
        (root / str(i)).mkdir(parents=True)
        turn = Turn("v", group=group, group_size=len(requests)) if group else Turn("v")
        runs.append(await engine.start(req, workdir=root / str(i), turn=turn))
    return list(
        await asyncio.gather(*(follow(engine, r, root / str(i)) for i, r in enumerate(runs)))
    )


def audio(updates: list[RunUpdate]) -> np.ndarray:
    assert updates[-1].status == "succeeded", updates[-1].error
    return samples(updates[-1].audio_path or "")[0]


# Each row its own prompt, length, seed, sampling and guidance (0: unconditional; 1: none).
MIXED = [
    request(prompt="calm piano", duration=1, seed=5),
    request(prompt="fast rock drums guitar", duration=2, seed=6, top_p=0.9, temperature=0.8),
    request(prompt="jazz", duration=1, seed=7, classifier_free_guidance=0, top_k=20),
]


async def test_seeds_hold_within_a_batch(
    engine: LocalEngine, tmp_path: Path, generate_calls: list[int]
) -> None:
    first = await make(engine, MIXED, tmp_path / "a", group="g1")
    again = await make(engine, MIXED, tmp_path / "b", group="g2")
    alone = await make(engine, MIXED[1:2], tmp_path / "c", group=None)
    other = await make(engine, [MIXED[1], request(seed=99)], tmp_path / "d", group="g3")

    assert generate_calls == [3, 3, 1, 2]  # each group in one pass
    takes = [audio(u) for u in first]
    # Each take is cut to its own length, though the pass ran to the longest.
    assert [t.shape[-1] for t in takes] == [RATE, 2 * RATE, RATE]
    # The same seeds make the same takes again, and three seeds three different takes.
    assert all(np.array_equal(a, audio(b)) for a, b in zip(takes, again, strict=True))
    assert not np.allclose(takes[0], takes[2][:, :RATE])
    # A row does not depend on the rest of its batch: alone, or beside another take, the
    # second row is the same take.
    assert np.array_equal(takes[1], audio(alone[0]))
    assert np.array_equal(takes[1], audio(other[0]))
    assert any(
        "Made in one pass with 2 other take(s)" in line for u in first[0] for line in u.new_logs
    )


async def test_one_row_cancelled_while_the_others_finish(
    engine: LocalEngine, tmp_path: Path
) -> None:
    reqs = [request(duration=2, seed=s) for s in (1, 2, 3)]
    runs = []
    for i, req in enumerate(reqs):
        (tmp_path / str(i)).mkdir()
        runs.append(await engine.start(req, workdir=tmp_path / str(i), turn=Turn("v", "g", 3)))

    async def follow_and_cancel() -> list[RunUpdate]:
        updates = []
        async for u in engine.follow(runs[1], started=time.monotonic(), workdir=tmp_path / "1"):
            updates.append(u)
            if u.progress and u.progress.done >= 20 and u.progress.done < 22:
                assert await engine.cancel(runs[1]) == "canceled"
        return updates

    first, middle, last = await asyncio.gather(
        follow(engine, runs[0], tmp_path / "0"),
        follow_and_cancel(),
        follow(engine, runs[2], tmp_path / "2"),
    )
    assert middle[-1].status == "canceled" and middle[-1].progress
    assert middle[-1].progress.done < middle[-1].progress.total
    assert not list((tmp_path / "1").glob("out.*"))
    for updates in (first, last):
        # The others went on to the end, and their progress was theirs: step by step to the
        # whole, never past it.
        done = [u.progress.done for u in updates if u.progress]
        total = {u.progress.total for u in updates if u.progress}
        assert total == {100 + 3} and done == sorted(done) and done[-1] == 103
        assert len(done) > 90
    # And what they made is what they make without the cancel.
    alone = await make(engine, [reqs[0], reqs[2]], tmp_path / "again", group="g4")
    assert np.array_equal(audio(first), audio(alone[0]))
    assert np.array_equal(audio(last), audio(alone[1]))


async def test_visitors_take_turns_and_waiting_runs_are_capped(
    tiny_musicgen: TinyCheckpoints, tmp_path: Path
) -> None:
    config = LocalConfig(
        default_model=str(tiny_musicgen.text),
        device="cpu",
        preview_seconds=0,
        max_batch=1,
        max_queued_per_visitor=3,
    )
    local = LocalEngine(config)
    library = Library(tmp_path)
    service = make_service(None, tmp_path, library=library, local=local, MUSICGEN_ENGINE="local")
    ended: list[str] = []
    running = asyncio.Event()
    queued: list[str] = []

    async def click(owner: str, seconds: int = 1) -> None:
        updates = service.generate(
            request(duration=seconds, seed=1), token=None, owner=owner, engine="local"
        )
        async for update in updates:
            if update.progress:
                running.set()
            if update.queue_position:
                queued.append(owner)
            if update.finished:
                ended.append(owner)

    try:
        busy = asyncio.create_task(click("someone", 4))  # holds the device meanwhile
        await running.wait()
        heavy = [asyncio.create_task(click("heavy")) for _ in range(3)]
        while queued.count("heavy") < 3:
            await asyncio.sleep(0.01)
        # A fourth waiting run is refused before anything is stored, naming the setting.
        assert library.counts("heavy")["total"] == 3
        with pytest.raises(StudioError, match="MUSICGEN_LOCAL_MAX_QUEUED_PER_VISITOR=3"):
            await click("heavy")
        assert library.counts("heavy")["total"] == 3
        light = asyncio.create_task(click("light"))
        await asyncio.gather(busy, *heavy, light)
    finally:
        local.shutdown()
    # The light visitor came last but waited one turn, not three.
    assert ended == ["someone", "heavy", "light", "heavy", "heavy"]


async def test_guidance_is_per_row(
    engine: LocalEngine, tmp_path: Path, generate_calls: list[int]
) -> None:
    # 1: the prompt's logits only; 0: the unconditional model's; 3: guided. One pass.
    reqs = [request(seed=5, classifier_free_guidance=g) for g in (1, 0, 3)]
    together = [audio(u) for u in await make(engine, reqs, tmp_path / "a", group="g")]
    alone = await make(engine, reqs[:1], tmp_path / "b", group=None)
    assert generate_calls == [3, 1]
    assert not np.allclose(together[0], together[1]) and not np.allclose(together[0], together[2])
    # Alone, guidance 1 needs no unconditional half at all, and makes the same take.
    assert np.array_equal(together[0], audio(alone[0]))
