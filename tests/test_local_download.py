"""A checkpoint that can't be fetched or read says which problem it is, in plain words."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import httpx
import pytest

pytest.importorskip("transformers")

from services.engines.local.download import unavailable_message
from services.engines.local.loader import check_tokenizer_files
from services.errors import StudioError
from tests.support.tiny_musicgen import TinyCheckpoints

NAME = "facebook/musicgen-small"


def _raised_from(outer: Exception, inner: BaseException) -> Exception:
    """`outer` as the Hub raises it: wrapping the OS or HTTP error underneath."""
    try:
        try:
            raise inner
        except BaseException as why:
            raise outer from why
    except Exception as wrapped:
        return wrapped


def test_download_failures_other_than_offline_say_what_they_are() -> None:
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    full = _raised_from(RuntimeError("write failed"), OSError(errno.ENOSPC, "No space left"))
    assert "the disk is full" in unavailable_message(NAME, full, "MUSICGEN_LOCAL_MODEL")
    denied = PermissionError(errno.EACCES, "Permission denied", "/data/hf/hub")
    said = unavailable_message(NAME, denied, "MUSICGEN_LOCAL_MODEL")
    assert "may not write" in said and "/data/hf/hub" in said
    request = httpx.Request("GET", "https://huggingface.co/api/models/" + NAME)
    busy = HfHubHTTPError("503", response=httpx.Response(503, request=request))
    said = unavailable_message(NAME, busy, "MUSICGEN_LOCAL_MODEL")
    assert "server error (HTTP 503)" in said and "try again" in said
    offline = LocalEntryNotFoundError("cannot reach the Hub")
    said = unavailable_message(NAME, offline, "MUSICGEN_LOCAL_MELODY_MODEL")
    assert "no connection" in said and "MUSICGEN_LOCAL_MELODY_MODEL" in said
    odd = unavailable_message(NAME, ValueError("bad header"), "MUSICGEN_LOCAL_MODEL")
    assert "ValueError: bad header" in odd and "no connection" not in odd


def test_a_checkpoint_with_only_spiece_model_loads_with_sentencepiece_and_says_so_without(
    tiny_musicgen: TinyCheckpoints, tmp_path: Path
) -> None:
    sentencepiece = pytest.importorskip("sentencepiece")
    folder = tmp_path / "spiece-only"
    shutil.copytree(tiny_musicgen.text, folder)
    (folder / "tokenizer.json").unlink()
    text = tmp_path / "words.txt"
    text.write_text("calm piano rock drums lofi beat jazz guitar synth fast\n" * 50)
    sentencepiece.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(folder / "spiece"), vocab_size=27, model_type="unigram"
    )
    check_tokenizer_files("mine", folder, has_sentencepiece=True)  # loads: nothing to say
    with pytest.raises(StudioError, match=r"spiece\.model.*sentencepiece"):
        check_tokenizer_files("mine", folder, has_sentencepiece=False)
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(folder)(["calm piano"])["input_ids"][0]
    assert len(ids) >= 2
