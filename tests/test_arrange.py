"""Songs in sections (Arrange), against the emulator over real HTTP and real audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.compose import audio_ops
from services.compose.arrange import (
    Arranger,
    Section,
    parse_sections,
    plan_song,
    section_spans,
)
from services.errors import RequestInvalid, SpendingLimit, StudioError
from services.generation import GenerationService
from services.library import Library
from tests.browser_support import creates
from tests.support.arrange_once import SETTINGS, SONG
from tests.support.interrupt import cancel_when, kill_at_second_part, run_module
from tests.support.services import make_extender, take
from ui.compose_arrange import sections_from_text


def make(emulator, data_dir: Path, **env: str) -> tuple[GenerationService, Arranger, Library]:
    """The service and library of test_extend's setup, with an Arranger on them."""
    service, _, library = make_extender(emulator, data_dir, **env)
    return service, Arranger(service, library, data_dir), library


def sent(emulator) -> list[dict]:
    """The model inputs of every create the emulator received, in order."""
    return [body["input"] for body in creates(emulator)]


async def song(arranger: Arranger, token: str, sections=SONG, overlap=2, **kw):
    return [
        u
        async for u in arranger.arrange(
            sections, SETTINGS, token=token, owner=None, overlap=overlap, **kw
        )
    ]


def test_a_song_plans_one_opening_take_then_continuations_per_section():
    sections = [Section("a", 2), Section("b", 40), Section("c", 3)]
    steps = plan_song(sections, 5)
    assert [(s.section, s.overlap, s.new_seconds) for s in steps] == [
        (0, 0, 2),  # the opening: a plain take
        (1, 2, 20),  # the song is only 2 s long yet: it hears 2 s
        (1, 2, 20),
        (2, 5, 3),
    ]
    assert all(s.duration <= 30 for s in steps)
    # Resuming from 22 s: the rest of the verse, then the chorus.
    assert [(s.section, s.new_seconds) for s in plan_song(sections, 5, made=22)] == [
        (1, 20),
        (2, 3),
    ]


def test_the_page_takes_one_section_per_line_and_a_bad_line_is_named():
    text = "intro | soft piano | 8 s\n\nverse | drums | bass | 16\njust a prompt"
    sections = sections_from_text(text)
    assert sections[:2] == [
        {"name": "intro", "prompt": "soft piano", "seconds": "8"},
        {"name": "verse", "prompt": "drums | bass", "seconds": "16"},
    ]
    with pytest.raises(RequestInvalid) as refused:
        parse_sections(sections)
    assert [str(e.message) for e in refused.value.errors] == [
        "section 3: its seconds must be a whole number from 1 to 300."
    ]
    pasted = '[{"prompt": "a", "seconds": 2}]'
    assert sections_from_text(pasted) == pasted  # JSON goes to the service as it is


async def test_a_song_is_its_sections_in_order_each_made_under_its_own_prompt(emulator, tmp_path):
    emulator.configure(max_wait_seconds=0.2)
    _, arranger, library = make(emulator, tmp_path)

    updates = await song(arranger, emulator.token)

    final = updates[-1]
    assert final.finished and final.status == "succeeded", final.error
    track = audio_ops.load(Path(final.audio_path))
    assert audio_ops.seconds(track) == pytest.approx(11, abs=0.1)  # 3 + 4 + 4
    inputs = sent(emulator)
    assert [i["prompt"] for i in inputs] == [s["prompt"] for s in SONG]
    # The opening is a plain take; each later section continues the song's last 2 s.
    assert "input_audio" not in inputs[0] and not inputs[0].get("continuation")
    assert [(i["continuation"], i["duration"]) for i in inputs[1:]] == [(True, 6), (True, 6)]
    entry = library.get(final.entry_id)
    assert entry.kind == "song" and entry.status == "succeeded"
    spans = section_spans(entry)
    assert [(s["name"], s["start"], s["end"]) for s in spans] == [
        ("intro", 0, 3),
        ("verse", 3, 7),
        ("chorus", 7, 11),
    ]
    assert all(s["made"] and s["run"] for s in spans)
    parts = [r for r in library.children(entry.id) if r.kind == "part"]
    assert sorted(p.id for p in parts) == sorted(s["run"] for s in spans)
    # One entry in the history; its parts are inside it.
    listed = [r.id for r in library.list(None).items]
    assert listed == [entry.id]
    # Progress said which section was being made.
    assert [u.section for u in updates if u.run and u.run.finished] == [0, 1, 2]


async def test_a_section_longer_than_one_run_is_made_in_parts_under_its_prompt(emulator, tmp_path):
    emulator.configure(max_wait_seconds=0.2)
    _, arranger, library = make(emulator, tmp_path)
    sections = [{"prompt": "drone opening", "seconds": 2}, {"prompt": "long build", "seconds": 33}]

    final = (await song(arranger, emulator.token, sections, overlap=3))[-1]

    assert final.status == "succeeded", final.error
    assert library.get(final.entry_id).audio_seconds == pytest.approx(35, abs=0.1)
    inputs = sent(emulator)
    assert [i["prompt"] for i in inputs] == ["drone opening", "long build", "long build"]
    assert max(i["duration"] for i in inputs) <= 30
    spans = section_spans(library.get(final.entry_id))
    assert len(spans[1]["runs"]) == 2 and (spans[1]["start"], spans[1]["end"]) == (2, 35)


async def test_making_a_section_again_keeps_the_ones_before_and_remakes_the_rest(
    emulator, tmp_path
):
    emulator.configure(max_wait_seconds=0.2)
    _, arranger, library = make(emulator, tmp_path)
    first = (await song(arranger, emulator.token))[-1]
    entry = library.get(first.entry_id)
    before = section_spans(entry)
    intro = audio_ops.samples(audio_ops.frames(audio_ops.load(Path(first.audio_path)), 0, 2.9))
    new_verse = [*SONG[:1], {**SONG[1], "prompt": "quiet verse, brushes"}, *SONG[2:]]

    updates = [
        u
        async for u in arranger.redo(
            entry.id, 2, sections=new_verse, token=emulator.token, owner=None
        )
    ]

    assert updates[-1].status == "succeeded", updates[-1].error
    after = section_spans(library.get(entry.id))
    assert after[0] == before[0]  # the intro: same run, same span
    assert after[1]["run"] != before[1]["run"] and after[2]["run"] != before[2]["run"]
    assert after[1]["prompt"] == "quiet verse, brushes"
    assert [i["prompt"] for i in sent(emulator)][-2:] == ["quiet verse, brushes", SONG[2]["prompt"]]
    song_now = audio_ops.load(Path(updates[-1].audio_path))
    assert audio_ops.seconds(song_now) == pytest.approx(11, abs=0.1)
    head = audio_ops.samples(audio_ops.frames(song_now, 0, 2.9))
    assert np.allclose(head, intro, atol=2e-4)  # the intro sounds as it did
    # The replaced sections' runs are still in the library, listed as replaced.
    replaced = library.get(entry.id).compose["replaced"]
    assert {p["run_id"] for p in replaced} == {before[1]["run"], before[2]["run"]}
    assert all(library.get(p["run_id"]).has_audio for p in replaced)


async def test_a_redo_that_fails_before_it_runs_frees_the_runs_it_held(emulator, tmp_path):
    emulator.configure(max_wait_seconds=0.2)
    _, arranger, library = make(emulator, tmp_path, MUSICGEN_MAX_RUNS_IN_FLIGHT="1")
    first = (await song(arranger, emulator.token))[-1]
    intro = section_spans(library.get(first.entry_id))[0]["run"]
    assert library.delete(intro)  # the section kept by the redo is gone from the library

    with pytest.raises(StudioError, match="missing from the library"):
        async for _ in arranger.redo(first.entry_id, 2, token=emulator.token, owner=None):
            pass

    # The redo held the visitor's one run slot for its sections; failing, it gave it back.
    again = (await song(arranger, emulator.token))[-1]
    assert again.status == "succeeded", again.error


async def test_the_spending_guard_counts_the_whole_song_before_anything_is_sent(emulator, tmp_path):
    service, arranger, _ = make(emulator, tmp_path, MUSICGEN_MAX_GPU_SECONDS_PER_VISITOR="30")
    one_run = service.estimate("stereo-large", 6, "replicate").gpu_seconds
    count, whole = arranger.estimate(SONG, 2, "stereo-large", "replicate")
    assert count == 3 and one_run < 30 < whole.gpu_seconds  # each run fits, the song does not
    assert whole.gpu_seconds == pytest.approx(
        sum(service.estimate("stereo-large", d, "replicate").gpu_seconds for d in (3, 6, 6))
    )

    with pytest.raises(SpendingLimit) as refused:
        await song(arranger, emulator.token)

    assert f"≈ {whole.gpu_seconds:.0f} s of GPU time" in str(refused.value)  # the whole song
    assert creates(emulator) == []


@pytest.mark.parametrize(
    ("sections", "says"),
    [
        ([], "at least one section"),
        ("[{'prompt': 'x'}", "JSON list"),
        ([{"prompt": "a", "seconds": 4}, {"prompt": " ", "seconds": 4}], "section 2: describe"),
        ([{"prompt": "a", "seconds": 4}, {"prompt": "b", "seconds": 2.5}], "section 2: its sec"),
        ([{"prompt": "a", "seconds": 200}, {"prompt": "b", "seconds": 200}], "at most 300 s"),
        ([{"prompt": "a" * 1001, "seconds": 4}], "section 1: its prompt is 1001"),
    ],
)
async def test_bad_sections_are_refused_by_name_and_nothing_is_sent(
    emulator, tmp_path, sections, says
):
    _, arranger, library = make(emulator, tmp_path)
    with pytest.raises(RequestInvalid) as refused:
        await song(arranger, "x", sections)
    assert [e.field for e in refused.value.errors] == ["sections"]
    assert says in str(refused.value)
    assert creates(emulator) == [] and library.list(None).items == []


async def test_a_string_of_json_is_taken_and_a_bad_overlap_named(emulator, tmp_path):
    _, arranger, _ = make(emulator, tmp_path)
    with pytest.raises(RequestInvalid) as refused:
        await song(arranger, "x", '[{"prompt": "a", "seconds": 3}]', overlap=11)
    assert [e.field for e in refused.value.errors] == ["overlap"]


async def test_a_stopped_song_keeps_its_sections_and_resumes(emulator, tmp_path):
    emulator.configure(max_wait_seconds=0.2)
    _, arranger, library = make(emulator, tmp_path)

    def verse_runs_long(update) -> None:
        if update.section == 0 and update.run and update.run.finished:
            emulator.configure(run_seconds=30.0)

    seen = await cancel_when(
        arranger.arrange(SONG, SETTINGS, token=emulator.token, owner=None, overlap=2),
        lambda seen: any(u.section == 1 and u.run and u.run.status == "processing" for u in seen),
        on_update=verse_runs_long,
    )

    entry = library.get(seen[0].entry_id)
    assert entry.compose["state"] == "interrupted" and entry.status == "succeeded"
    assert entry.audio_seconds == pytest.approx(3, abs=0.05)  # the intro is kept
    emulator.configure(run_seconds=None)
    resumed = [u async for u in arranger.resume(entry.id, token=emulator.token, owner=None)]
    assert resumed[-1].status == "succeeded", resumed[-1].error
    assert library.get(entry.id).audio_seconds == pytest.approx(11, abs=0.1)
    assert [s["made"] for s in section_spans(library.get(entry.id))] == [True, True, True]


async def test_a_song_killed_mid_section_resumes_after_a_restart_without_paying_twice(
    emulator, tmp_path
):
    emulator.configure(max_wait_seconds=0.2, run_seconds=3.0)
    process = run_module(
        "tests.support.arrange_once", str(tmp_path), emulator.base_url, emulator.token
    )
    library = Library(tmp_path)
    # Killed once the intro is filed and the verse is on the emulator.
    entry, parts = kill_at_second_part(process, library, "song")
    assert entry.status == "processing" and len(entry.compose["parts"]) == 1
    creates_before = len(creates(emulator))

    # The next start: the song becomes resumable and the verse in flight is filed.
    emulator.configure(run_seconds=None)
    service2, arranger2, library2 = make(emulator, tmp_path)
    assert arranger2.mark_interrupted() == [entry.id]
    await service2.resume_in_flight(token=emulator.token)
    resumed = [u async for u in arranger2.resume(entry.id, token=emulator.token, owner=None)]

    assert resumed[-1].status == "succeeded", resumed[-1].error
    # The verse already paid for is used: only the chorus was created.
    assert [i["prompt"] for i in sent(emulator)[creates_before:]] == [SONG[2]["prompt"]]
    final = library2.get(entry.id)
    assert final.audio_seconds == pytest.approx(11, abs=0.1)
    assert [s["run"] for s in section_spans(final)][:2] == [parts[0].id, parts[1].id]


async def test_a_song_can_start_from_a_result_its_first_section_continuing_it(emulator, tmp_path):
    emulator.configure(max_wait_seconds=0.2)
    service, arranger, library = make(emulator, tmp_path)
    source = await take(service, emulator.token, seconds=4)
    original = audio_ops.samples(audio_ops.load(library.audio_file(library.get(source))))
    before = len(creates(emulator))

    final = (await song(arranger, emulator.token, SONG[1:], from_run=source))[-1]

    assert final.status == "succeeded", final.error
    track = audio_ops.load(Path(final.audio_path))
    assert audio_ops.seconds(track) == pytest.approx(12, abs=0.1)  # 4 + 4 + 4
    head = audio_ops.samples(audio_ops.frames(track, 0, 3.9))
    assert np.allclose(head, original[: len(head)], atol=2e-4)  # it starts with the result
    inputs = sent(emulator)[before:]
    assert [(i["prompt"], i["continuation"]) for i in inputs] == [
        (SONG[1]["prompt"], True),  # the verse continues the result: no plain take
        (SONG[2]["prompt"], True),
    ]
    spans = section_spans(library.get(final.entry_id))
    assert [(s["start"], s["end"]) for s in spans] == [(4, 8), (8, 12)]
    # A song that would pass 5 minutes with the result is refused before anything is sent.
    with pytest.raises(RequestInvalid, match="at most 296 s"):
        await song(arranger, "x", [{"prompt": "long", "seconds": 297}], from_run=source)
