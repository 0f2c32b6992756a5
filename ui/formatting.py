"""HTML snippets the page shows. Every piece of user or API text goes through `esc` first.

Plain functions (no Gradio) so the escaping rules can be unit-tested on their own.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

from services.errors import FieldError
from services.musicgen import INPUTS, MODEL_VERSIONS

REPLICATE_RUN_URL = "https://replicate.com/p/{id}"

# What a musician reads for each stage of a run.
STATUS_LABELS: dict[str, str] = {
    "idle": "Ready",
    "validating": "Checking your settings…",
    "preparing": "Preparing your clip…",
    "creating": "Starting the run…",
    "pending": "Waiting to be sent…",
    "starting": "Queued: waiting for a GPU (the model may need to load first)…",
    "processing": "Generating…",
    # Paid for; its audio is fetched again while Replicate keeps it (the reason says try n).
    "downloading": "Done on Replicate: downloading the audio…",
    "succeeded": "Done",
    "failed": "Failed",
    "canceling": "Canceling…",
    "canceled": "Canceled",
    "aborted": "Aborted",
    "lost": "Lost",
}
# A refused field, named as the page names it: the model input's label, or the control's
# where the page shows it differently.
FIELD_LABELS: dict[str, str] = {
    **{spec.name: spec.label for spec in INPUTS},
    "continuation": "Use of the clip",
    "continuation_start": "Continue from",
    "continuation_end": "Continue until",
    "classifier_free_guidance": "Guidance",
    "sections": "Sections",
    "overlap": "Overlap",
}


def esc(value: Any) -> str:
    """Text made safe to place inside HTML (also inside attribute values)."""
    return html.escape("" if value is None else str(value), quote=True)


def seconds_text(seconds: float | None) -> str:
    """12.345 -> "12.3 s"; None -> "–"."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    if seconds >= 60:
        minutes, rest = divmod(seconds, 60)
        return f"{int(minutes)} min {rest:.0f} s"
    return f"{seconds:.1f} s"


def date_text(epoch: float | None) -> str:
    """Epoch seconds as the server's local date and time, to the minute."""
    if epoch is None:
        return "–"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch))


def model_text(model_version: str | None) -> str:
    """ "stereo-large" -> "stereo-large (Stereo, text only)"."""
    if not model_version:
        return "–"
    what = MODEL_VERSIONS.get(model_version)
    return f"{model_version} ({what})" if what else model_version


def replicate_url(prediction_id: str | None) -> str | None:
    return REPLICATE_RUN_URL.format(id=prediction_id) if prediction_id else None


# -- the form --------------------------------------------------------------------------------


def errors_html(errors: Iterable[FieldError], *, intro: str | None = None) -> str:
    """The refusals beside the form, one line per field, with nothing sent."""
    items = "".join(
        f'<li data-field="{esc(e.field)}"><b>{esc(FIELD_LABELS.get(e.field, e.field))}:</b> '
        f"{esc(e.message)}</li>"
        for e in errors
    )
    head = esc(intro or "Nothing was sent. Please change:")
    return f'<div class="ms-box ms-error" role="alert"><p>{head}</p><ul>{items}</ul></div>'


def message_html(text: str, *, kind: str = "error") -> str:
    """One message box: kind is "error", "warning" or "info"."""
    role = ' role="alert"' if kind == "error" else ""
    return f'<div class="ms-box ms-{esc(kind)}"{role}>{esc(text)}</div>'


def warnings_html(notes: Iterable[str]) -> str:
    notes = list(notes)
    if not notes:
        return ""
    return "".join(message_html(n, kind="warning") for n in notes)


def token_banner_html(missing: bool, *, local: bool = False) -> str:
    """The banner shown when no token is available (no server token, none pasted).

    With a local engine the studio works without one: the banner only says what a token adds.
    """
    if not missing:
        return ""
    if local:
        return (
            '<div class="ms-box ms-info ms-banner" role="status">'
            "<b>Music is made on this machine; no account needed.</b> To use Replicate's "
            "large models instead, paste your Replicate API token (from "
            "replicate.com/account/api-tokens) below. It stays in this browser only; runs "
            "on Replicate are billed to your account.</div>"
        )
    return (
        '<div class="ms-box ms-warning ms-banner" role="status">'
        "<b>No Replicate API token yet: nothing can be generated.</b> Paste your own token "
        "(from replicate.com/account/api-tokens) in the field below. It stays in this "
        "browser only; runs are billed to your Replicate account.</div>"
    )


# -- a run in progress -----------------------------------------------------------------------


def status_html(
    status: str,
    *,
    elapsed: float | None = None,
    error: str | None = None,
    prediction_id: str | None = None,
    queue_position: int | None = None,
) -> str:
    """The run's stage, how long it has taken, and why it ended when it did not succeed.

    `prediction_id` is linked to its page on replicate.com: pass it for Replicate runs only.
    `queue_position` (1 = next) says where a run waits for this machine's model.
    """
    label = STATUS_LABELS.get(status, status)
    if queue_position is not None and status == "starting":
        label = f"Queued (position {queue_position}): waiting for this machine's model…"
    parts = [f'<span class="ms-status-label">{esc(label)}</span>']
    if elapsed is not None:
        parts.append(f'<span class="ms-elapsed">{esc(seconds_text(elapsed))} elapsed</span>')
    url = replicate_url(prediction_id)
    if url:
        # The prediction's own id stays in the result's Details; here it is a link.
        parts.append(f'<a href="{esc(url)}" target="_blank" rel="noopener">on Replicate ↗</a>')
    body = " · ".join(parts)
    if error:
        body += f'<div class="ms-reason">{esc(error)}</div>'
    return (
        f'<div class="ms-status ms-status-{esc(status)}" data-status="{esc(status)}">{body}</div>'
    )


def progress_html(done: int | None, total: int | None) -> str:
    """A progress bar from the model's token count (50 tokens per second of audio)."""
    if not total:
        pct = 0.0
        text = "waiting for the model to start writing…"
    else:
        pct = max(0.0, min(100.0, 100.0 * (done or 0) / total))
        text = f"{done} / {total} tokens · {pct:.0f}%"
    return (
        f'<div class="ms-progress" role="progressbar" aria-valuemin="0" aria-valuemax="100" '
        f'aria-valuenow="{pct:.0f}" data-done="{done or 0}" data-total="{total or 0}">'
        f'<div class="ms-progress-fill" style="width: {pct:.1f}%"></div></div>'
        f'<div class="ms-progress-text">{esc(text)}</div>'
    )


def idle_progress_html() -> str:
    """No run going: an empty bar and no words (nothing is waiting)."""
    return progress_html(None, None).replace("waiting for the model to start writing…", "")


# -- the history gallery ---------------------------------------------------------------------


def tempo_key_parts(card: Mapping[str, Any]) -> list[str]:
    """The measured tempo (a loop's asked one beside it) and key, as a card shows them."""
    parts = []
    if card.get("bpm") is not None:
        tempo = f"{float(card['bpm']):.1f} BPM"
        if card.get("asked_bpm") is not None:
            tempo += f" (asked {float(card['asked_bpm']):g})"
        parts.append(tempo)
    if card.get("key"):
        parts.append(str(card["key"]))
    return parts


def card_html(card: Mapping[str, Any]) -> str:
    """One history card's text: its kind's badge, the prompt, model, date, seed, and why it
    ended when it did not succeed."""
    status = str(card.get("status") or "")
    prompt = card.get("prompt") or ""
    prompt_html = (
        f'<div class="ms-card-prompt">{esc(prompt)}</div>'
        if prompt
        else '<div class="ms-card-prompt ms-muted">(no prompt: audio only)</div>'
    )
    meta = [esc(card.get("model_version") or "–"), esc(date_text(card.get("created_at")))]
    if card.get("seed") is not None:
        meta.append(f"seed {esc(card['seed'])}")
    meta.extend(esc(part) for part in tempo_key_parts(card))
    kind = esc(card.get("kind") or "take")
    badge = f'<span class="ms-kind ms-kind-{kind}">{esc(card.get("badge") or "Take")}</span>'
    if status != "succeeded":
        word = STATUS_LABELS.get(status, status).rstrip("…")
        badge += f' <span class="ms-badge ms-badge-{esc(status)}">{esc(word)}</span>'
    fav = ' <span class="ms-fav" title="Favourite">★</span>' if card.get("favourite") else ""
    reason = ""
    if status in {"failed", "canceled", "aborted", "lost"} or card.get("data_removed"):
        why = card.get("error") or (
            "Replicate removed this run's audio before it was stored."
            if card.get("data_removed")
            else "No reason was given."
        )
        reason = f'<div class="ms-reason">{esc(why)}</div>'
    return (
        f'<div class="ms-card-text" data-run="{esc(card.get("id"))}" data-status="{esc(status)}" '
        f'data-audio="{esc(card.get("audio_url") or "")}">{badge}{fav}{prompt_html}'
        f'<div class="ms-card-meta">{" · ".join(meta)}</div>{reason}</div>'
    )


def history_summary_html(total: int, page: int, pages: int, search: str | None) -> str:
    what = f"{total} run{'s' if total != 1 else ''}"
    if search:
        what += f" matching “{esc(search)}”"
    return f'<div class="ms-history-summary">{what} · page {page} of {pages}</div>'
