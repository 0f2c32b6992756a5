"""The library keeps every run on disk: real SQLite files, real audio made with ffmpeg."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
from pydub import AudioSegment

from services.library import AlreadyInLibrary, Library, LibraryError, RunNotFound
from services.library.files import write_atomic
from services.library.schema import SCHEMA_VERSION
from services.musicgen import GenerationRequest
from tests.support.stored import files_holding, folder_contents

REPO = Path(__file__).resolve().parents[1]
TOKEN = "r8_" + "Zk3xQ9vB7mT2pL5wR8yN4cF6hJ1dG0sA3eU7i"  # fake; split so secret scanners skip it


def make_audio(folder: Path, seconds: float = 1.0, fmt: str = "wav", freq: int = 440) -> Path:
    """A real tone file encoded by ffmpeg."""
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"tone-{freq}-{seconds}.{fmt}"
    subprocess.run(
        [
            *("ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi"),
            *("-i", f"sine=frequency={freq}:duration={seconds}", "-ac", "2", str(out)),
        ],
        check=True,
    )
    return out


def request(prompt: str = "lo-fi beat", **kw) -> dict:
    return GenerationRequest(prompt=prompt, **kw).to_dict()


def finished_run(lib: Library, tmp: Path, prompt: str, *, owner=None, seconds=1.0, **kw):
    """A run carried through the studio's whole lifecycle, audio attached."""
    rec = lib.create_pending(owner, request(prompt), **kw)
    lib.update(rec.id, prediction_id=f"p{rec.id[:10]}", status="processing", seed=42)
    src = make_audio(tmp / "src", seconds, freq=200 + int(seconds * 100))
    return lib.attach_audio(rec.id, src, fmt="wav", seconds=seconds)


def run_python(code: str, *, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


# -- persistence across instances and processes -------------------------------------------


def test_a_new_instance_and_a_new_process_see_everything_stored(tmp_path):
    data = tmp_path / "data"
    lib = Library(data)
    done = finished_run(lib, tmp_path, "warm synth pads")
    lib.set_favourite(done.id, None, True)
    failed = lib.create_pending(None, request("broken"), parent_id=done.id)
    lib.update(failed.id, status="failed", error="Must provide either prompt or input_audio")
    pending = lib.create_pending(None, request("still going"))

    again = Library(data)
    assert again.get(done.id) == lib.get(done.id)
    assert [r.id for r in again.list().items] == [pending.id, failed.id, done.id]

    code = f"""
import json
from pathlib import Path
from services.library import Library
lib = Library(Path({str(data)!r}))
page = lib.list()
out = [r.to_dict() for r in page.items]
f = lib.get({done.id!r})
print(json.dumps({{"runs": out, "audio": lib.audio_file(f).read_bytes().hex()}}))
"""
    seen = json.loads(run_python(code).stdout)
    by_id = {r["id"]: r for r in seen["runs"]}
    assert set(by_id) == {done.id, failed.id, pending.id}
    assert by_id[done.id]["status"] == "succeeded"
    assert by_id[done.id]["favourite"] is True
    assert by_id[done.id]["seed"] == 42
    assert by_id[done.id]["request"]["prompt"] == "warm synth pads"
    assert by_id[failed.id]["error"] == "Must provide either prompt or input_audio"
    assert by_id[failed.id]["parent_id"] == done.id
    assert by_id[pending.id]["status"] == "pending"
    assert bytes.fromhex(seen["audio"]) == lib.audio_file(done).read_bytes()


def test_what_another_process_writes_is_seen_here(tmp_path):
    data = tmp_path / "data"
    lib = Library(data)
    src = make_audio(tmp_path / "src", 1.0)
    code = f"""
from pathlib import Path
from services.library import Library
lib = Library(Path({str(data)!r}))
rec = lib.create_pending("alice", {{"prompt": "from the other process"}})
lib.update(rec.id, status="processing", prediction_id="other123")
lib.attach_audio(rec.id, Path({str(src)!r}), fmt="wav", seconds=1.0)
print(rec.id)
"""
    run_id = run_python(code).stdout.strip()
    rec = lib.get(run_id, "alice")
    assert rec is not None and rec.status == "succeeded"
    assert lib.audio_file(rec).read_bytes() == src.read_bytes()
    assert lib.find_by_prediction("other123") == rec


def test_threads_and_processes_write_at_the_same_time_without_losing_a_run(tmp_path):
    data = tmp_path / "data"
    code = f"""
from pathlib import Path
from services.library import Library
lib = Library(Path({str(data)!r}))
for i in range(40):
    rec = lib.create_pending("proc", {{"prompt": f"process run {{i}}"}})
    lib.update(rec.id, status="processing", logs_tail="x" * 100)
    lib.update(rec.id, status="failed", error="boom")
"""
    # Several processes open (and migrate) the same brand-new folder at once.
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}
        )
        for _ in range(2)
    ]
    lib = Library(data)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(20):
                rec = lib.create_pending("threads", request(f"thread {n} run {i}"))
                lib.update(rec.id, status="starting")
                lib.set_favourite(rec.id, "threads", i % 2 == 0)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert errors == []
    assert lib.counts("threads")["starting"] == 80
    assert lib.counts("threads")["favourite"] == 40
    assert lib.counts("proc")["failed"] == 80
    assert lib.counts()["total"] == 160


# -- the database file: WAL, schema version, migrations ------------------------------------


def test_database_is_in_wal_mode_with_the_current_schema_version(tmp_path):
    Library(tmp_path)
    conn = sqlite3.connect(tmp_path / "library.sqlite3")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


@pytest.mark.parametrize("kind", ["empty file", "version 0 with another table"])
def test_an_old_database_is_migrated_and_keeps_what_it_had(tmp_path, kind):
    db = tmp_path / "library.sqlite3"
    if kind == "empty file":
        db.write_bytes(b"")
    else:
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE notes (text TEXT)")
        conn.execute("INSERT INTO notes VALUES ('keep me')")
        conn.commit()
        conn.close()
    lib = Library(tmp_path)
    rec = lib.create_pending(None, request("after migration"))
    assert Library(tmp_path).get(rec.id) == rec
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    if kind != "empty file":
        assert conn.execute("SELECT text FROM notes").fetchall() == [("keep me",)]


def test_a_database_from_a_newer_app_is_refused_untouched(tmp_path):
    db = tmp_path / "library.sqlite3"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(LibraryError, match="newer MusicGen Studio"):
        Library(tmp_path)
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == 99


def test_a_file_that_is_not_a_database_gives_a_clear_error(tmp_path):
    (tmp_path / "library.sqlite3").write_bytes(b"this is not sqlite at all, just text" * 50)
    with pytest.raises(LibraryError, match="MUSICGEN_DATA_DIR"):
        Library(tmp_path)


# -- audio files ---------------------------------------------------------------------------


def test_attached_audio_is_a_full_decodable_copy_and_marks_the_run_succeeded(tmp_path):
    lib = Library(tmp_path / "data")
    rec = lib.create_pending(None, request("drums"))
    src = make_audio(tmp_path / "src", 2.0, "mp3")
    done = lib.attach_audio(rec.id, src, fmt="mp3", seconds=2.0)
    path = lib.audio_file(done)
    assert path.parent == (tmp_path / "data" / "audio").resolve()
    assert path.read_bytes() == src.read_bytes()
    assert done.status == "succeeded" and done.completed_at is not None
    assert (done.audio_format, done.audio_seconds) == ("mp3", 2.0)
    assert done.audio_bytes == src.stat().st_size
    assert abs(len(AudioSegment.from_file(path)) / 1000 - 2.0) < 0.1
    src.unlink()  # the library's copy does not depend on the caller's file
    assert lib.audio_file(done).is_file()
    assert list((tmp_path / "data" / "audio").glob(".*")) == []


def test_a_run_is_succeeded_only_once_its_audio_is_stored(tmp_path):
    lib = Library(tmp_path)
    rec = lib.create_pending(None, request())
    with pytest.raises(ValueError, match="attach_audio"):
        lib.update(rec.id, status="succeeded")
    with pytest.raises(ValueError, match="audio"):
        lib.add_run(None, request(), status="succeeded")
    assert lib.get(rec.id).status == "pending"


def test_an_interrupted_write_never_leaves_a_partial_file(tmp_path):
    dest = tmp_path / "audio" / "run.wav"
    dest.parent.mkdir()
    dest.write_bytes(b"the complete old file")

    def half_then_crash(out):
        out.write(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_atomic(dest, half_then_crash)
    assert dest.read_bytes() == b"the complete old file"
    assert [p.name for p in dest.parent.iterdir()] == ["run.wav"]


def test_leftovers_of_a_crashed_writer_are_cleaned_on_open(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    old = audio / ".abc.wav.x1.part"
    old.write_bytes(b"partial")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    fresh = audio / ".def.wav.x2.part"  # may belong to a process writing right now
    fresh.write_bytes(b"partial")
    Library(tmp_path)
    assert not old.exists() and fresh.exists()


def test_audio_for_a_run_deleted_meanwhile_is_not_kept(tmp_path):
    lib = Library(tmp_path / "data")
    rec = lib.create_pending(None, request())
    lib.delete(rec.id)
    with pytest.raises(RunNotFound):
        lib.attach_audio(rec.id, make_audio(tmp_path / "src"), fmt="wav", seconds=1.0)
    with pytest.raises(RunNotFound):
        lib.update(rec.id, status="failed")
    assert list((tmp_path / "data" / "audio").iterdir()) == []


# -- updates -------------------------------------------------------------------------------


def test_updates_accept_api_timestamps_and_keep_only_the_log_tail(tmp_path):
    lib = Library(tmp_path)
    rec = lib.create_pending(None, request())
    logs = "Using seed 1234\n" + "".join(f"   {i} /  400\n" for i in range(1, 401))
    rec = lib.update(
        rec.id,
        status="processing",
        started_at="2024-05-01T10:00:00.123456789Z",
        logs_tail=logs,
        seed=1234,
    )
    assert rec.started_at == pytest.approx(1714557600.123456)
    assert rec.to_dict()["started_at"].startswith("2024-05-01T10:00:00.123456")
    assert len(rec.logs_tail) <= 4096 and rec.logs_tail.endswith("400 /  400\n")
    assert rec.logs_tail.startswith("   ")  # cut at a line start
    rec = lib.update(rec.id, status="canceled", error="Canceled by you.")
    assert rec.completed_at is not None and rec.finished
    with pytest.raises(ValueError, match="audio_path"):
        lib.update(rec.id, audio_path="../../etc/passwd")
    with pytest.raises(ValueError, match="status"):
        lib.update(rec.id, status="exploded")


def test_in_flight_spans_owners_and_predictions_are_found(tmp_path):
    lib = Library(tmp_path)
    a = lib.create_pending("alice", request("a"))
    b = lib.create_pending("bob", request("b"))
    lib.update(b.id, status="processing", prediction_id="pred-b")
    c = lib.create_pending(None, request("c"))
    lib.update(c.id, status="failed")
    assert [r.id for r in lib.in_flight()] == [a.id, b.id]
    assert lib.find_by_prediction("pred-b").id == b.id
    assert lib.find_by_prediction("pred-b", "alice") is None
    assert lib.known_predictions("bob") == {"pred-b"}
    with pytest.raises(AlreadyInLibrary):
        lib.add_run("bob", request("dup"), prediction_id="pred-b", status="failed")
    # Two visitors importing the same account each get their own copy.
    copy = lib.add_run("alice", request("b"), prediction_id="pred-b", status="failed")
    assert copy.owner == "alice"


# -- queries -------------------------------------------------------------------------------


def populate(lib: Library) -> list:
    """30 runs, oldest first, with varied prompts, models, statuses and favourites."""
    prompts = ["Smooth JAZZ trio", "100% pure techno", "file_name_like", "Été à Paris", "drone"]
    models = ["stereo-melody-large", "large"]
    statuses = ["failed", "canceled", "lost"]
    runs = []
    for i in range(30):
        rec = lib.add_run(
            None,
            request(f"{prompts[i % 5]} #{i}", model_version=models[i % 2]),
            created_at=1_700_000_000 + i * 60,
            status=statuses[i % 3],
        )
        if i % 4 == 0:
            rec = lib.set_favourite(rec.id, None, True)
        runs.append(rec)
    return runs


def test_pages_are_newest_first_and_a_page_past_the_end_gives_the_last(tmp_path):
    lib = Library(tmp_path)
    runs = populate(lib)
    newest_first = [r.id for r in reversed(runs)]
    first = lib.list(per_page=12)
    assert (first.total, first.pages, first.page) == (30, 3, 1)
    assert [r.id for r in first.items] == newest_first[:12]
    assert [r.id for r in lib.list(page=2, per_page=12).items] == newest_first[12:24]
    last = lib.list(page=99, per_page=12)
    assert last.page == 3 and [r.id for r in last.items] == newest_first[24:]
    with pytest.raises(ValueError, match="per_page"):
        lib.list(per_page=0)


def test_search_is_case_insensitive_and_wildcards_are_literal(tmp_path):
    lib = Library(tmp_path)
    populate(lib)
    jazz = lib.list(search="smooth jazz", per_page=100)
    assert jazz.total == 6 and all("JAZZ" in r.prompt for r in jazz.items)
    assert lib.list(search="100%", per_page=100).total == 6
    assert lib.list(search="%", per_page=100).total == 6
    assert lib.list(search="_", per_page=100).total == 6
    assert lib.list(search="ÉTÉ À", per_page=100).total == 6
    assert lib.list(search="nothing like this").total == 0
    assert lib.list(search="  ").total == 30


def test_filters_combine_and_counts_add_up(tmp_path):
    lib = Library(tmp_path)
    runs = populate(lib)
    assert lib.list(status="lost", per_page=100).total == 10
    assert lib.list(model="large", per_page=100).total == 15
    favs = lib.list(favourite=True, per_page=100)
    assert {r.id for r in favs.items} == {r.id for r in runs if r.favourite}
    assert lib.list(favourite=False, per_page=100).total == 30 - favs.total
    both = lib.list(status="failed", model="stereo-melody-large", search="jazz", per_page=100)
    assert [r.prompt for r in both.items] == ["Smooth JAZZ trio #0"]
    counts = lib.counts()
    assert counts["total"] == 30 and counts["favourite"] == 8
    assert (counts["failed"], counts["canceled"], counts["lost"]) == (10, 10, 10)
    assert counts["succeeded"] == 0 and counts["in_flight"] == 0


# -- owners --------------------------------------------------------------------------------


def test_two_owners_never_see_play_change_export_or_delete_each_others_runs(tmp_path):
    lib = Library(tmp_path / "data")
    alice = finished_run(lib, tmp_path, "alice's song", owner="alice")
    bob = finished_run(lib, tmp_path, "bob's song", owner="bob", seconds=2.0)

    assert [r.id for r in lib.list("alice").items] == [alice.id]
    assert lib.list("bob", search="alice").total == 0
    assert lib.counts("alice")["total"] == 1
    assert lib.get(alice.id, "bob") is None
    assert lib.set_favourite(alice.id, "bob", True) is None
    assert lib.delete(alice.id, "bob") is False
    with pytest.raises(RunNotFound):
        lib.export(alice.id, "bob", tmp_path / "exports")
    assert lib.find_by_prediction(alice.prediction_id, "bob") is None
    assert lib.total_bytes("bob") == bob.audio_bytes

    kept = lib.get(alice.id, "alice")
    assert kept is not None and not kept.favourite
    assert lib.audio_file(kept).is_file()
    assert not (tmp_path / "exports").exists()
    # A local install (owner None) sees everything.
    assert lib.counts()["total"] == 2
    assert lib.total_bytes() == alice.audio_bytes + bob.audio_bytes
    with pytest.raises(ValueError, match="owner"):
        lib.list("")


# -- delete, export, disk cap ----------------------------------------------------------------


def test_delete_removes_row_and_file(tmp_path):
    lib = Library(tmp_path / "data")
    rec = finished_run(lib, tmp_path, "to delete", owner="alice")
    path = lib.audio_file(rec)
    assert lib.delete(rec.id, "alice") is True
    assert not path.exists()
    assert lib.get(rec.id) is None
    assert Library(tmp_path / "data").counts()["total"] == 0
    assert lib.delete(rec.id, "alice") is False


def test_export_holds_the_audio_and_a_sidecar_with_the_settings(tmp_path):
    lib = Library(tmp_path / "data")
    settings = request("Funky bass & horns!", duration=12, temperature=0.7, top_k=100)
    rec = lib.create_pending("alice", settings)
    lib.update(rec.id, prediction_id="abcdefghij", status="processing", seed=777, predict_time=9.5)
    rec = lib.attach_audio(rec.id, make_audio(tmp_path / "src", 1.5), fmt="wav", seconds=1.5)

    zpath = lib.export(rec.id, "alice", tmp_path / "exports")
    assert zpath.parent == tmp_path / "exports" and zpath.suffix == ".zip"
    with zipfile.ZipFile(zpath) as zf:
        names = sorted(zf.namelist())
        assert names == [zpath.stem + ".json", zpath.stem + ".wav"]
        assert zf.read(zpath.stem + ".wav") == lib.audio_file(rec).read_bytes()
        meta = json.loads(zf.read(zpath.stem + ".json"))
    assert "funky-bass-horns" in zpath.stem
    assert meta["settings"] == settings
    assert meta["seed_used"] == 777 and meta["predict_time"] == 9.5
    assert meta["prediction_id"] == "abcdefghij"
    assert meta["audio"] == {
        "file": zpath.stem + ".wav",
        "format": "wav",
        "seconds": 1.5,
        "bytes": rec.audio_bytes,
    }


def test_export_of_a_run_without_audio_has_the_sidecar(tmp_path):
    lib = Library(tmp_path)
    rec = lib.create_pending(None, request("never made"))
    lib.update(rec.id, status="lost", error="Replicate removed this run's audio", data_removed=True)
    with zipfile.ZipFile(lib.export(rec.id, None, tmp_path / "out")) as zf:
        (name,) = zf.namelist()
        meta = json.loads(zf.read(name))
    assert meta["status"] == "lost" and meta["audio"] is None and meta["data_removed"] is True


def test_the_cap_removes_the_oldest_non_favourites_first_and_says_which(tmp_path):
    data = tmp_path / "data"
    lib = Library(data)
    runs = [finished_run(lib, tmp_path, f"song {i}", seconds=1.0 + i / 10) for i in range(5)]
    lib.set_favourite(runs[0].id, None, True)
    size = runs[0].audio_bytes  # about 180 KB each
    capped = Library(data, max_mb=(lib.total_bytes() - 1.5 * size) / 1024 / 1024)
    paths = [lib.audio_file(r) for r in runs]

    removed = capped.enforce_cap()
    assert [r.id for r in removed] == [runs[1].id, runs[2].id]
    assert [p.exists() for p in paths] == [True, False, False, True, True]
    assert capped.total_bytes() <= capped.max_mb * 1024 * 1024
    assert capped.get(runs[0].id).favourite
    assert capped.enforce_cap() == []
    assert Library(data).enforce_cap() == []  # no cap configured


def test_the_cap_spares_the_run_just_made(tmp_path):
    lib = Library(tmp_path / "data", max_mb=0.01)
    older = finished_run(lib, tmp_path, "older")
    newest = finished_run(lib, tmp_path, "newest", seconds=2.0)
    removed = lib.enforce_cap(keep=[newest.id, older.id])
    assert removed == []
    assert [r.id for r in lib.enforce_cap(keep=[newest.id])] == [older.id]
    assert lib.get(newest.id) is not None


# -- secrets -------------------------------------------------------------------------------


def test_no_token_reaches_any_byte_of_the_data_folder(tmp_path):
    data = tmp_path / "data"
    lib = Library(data, max_mb=50)
    # Another open connection keeps the write-ahead log on disk, so its bytes are checked too.
    keeper = sqlite3.connect(data / "library.sqlite3")
    keeper.execute("SELECT COUNT(*) FROM runs").fetchone()
    leaky = {**request(f"a prompt mentioning {TOKEN}"), "api_token": TOKEN, "replicate_token": 1}
    rec = lib.create_pending("alice", leaky)
    assert "api_token" not in rec.request and "replicate_token" not in rec.request
    lib.update(
        rec.id,
        status="processing",
        prediction_id="tok1",
        logs_tail=f"Using seed 3\nAuthorization: Bearer {TOKEN}\nheaders token={TOKEN}\n",
    )
    lib.update(rec.id, error=f"401 for Token {TOKEN}: You did not pass a valid token")
    rec = lib.attach_audio(rec.id, make_audio(tmp_path / "src"), fmt="wav", seconds=1.0)
    failed = lib.add_run(
        "alice", leaky, status="failed", error=f"bad {TOKEN}", logs_tail=TOKEN, source="import"
    )
    lib.export(rec.id, "alice", data / "exports")
    lib.export(failed.id, "alice", data / "exports")
    lib.list("alice", search="prompt")
    lib.enforce_cap()

    def assert_no_token_in_data_folder() -> list[Path]:
        assert files_holding(data, TOKEN) == [] and files_holding(data, TOKEN[:20]) == []
        return list(folder_contents(data))

    files = assert_no_token_in_data_folder()
    assert any(p.name.endswith("-wal") and p.stat().st_size > 0 for p in files)
    keeper.close()
    lib.close()  # the last connection folds the log into the database file
    assert not any(p.name.endswith("-wal") for p in data.rglob("*"))
    assert_no_token_in_data_folder()
    assert "[redacted]" in lib.get(rec.id).logs_tail
