"""A/B compare ("Compare" below the history): two entries, one transport, loudness-matched.

Both takes play at once in two <audio> elements, one muted; switching swaps which is muted, so
the playback position is kept and there is no gap. The louder take's volume is lowered by the
loudness difference the service measured (BS.1770). In blind mode the two are X and Y, in a
random order, until Reveal. Keep favourites the chosen take in the library.
"""

from __future__ import annotations

import asyncio
import secrets
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import gradio as gr

from services.compose.compare import Match, match
from services.errors import StudioError
from services.library import RunRecord
from ui.context import Studio
from ui.events import PRIVATE, QUICK
from ui.formatting import esc, message_html
from ui.kinds import entry_label

CHOICES_SHOWN = 100
EMPTY = (
    '<div class="ms-empty" id="compare-empty">Choose A and B from your history and press '
    "Compare.</div>"
)

# The player's behaviour. Listeners sit on the component's root, which outlives re-renders of
# its value; `setup` runs again whenever a new pair is shown.
PLAYER_JS = r"""
const q = (sel) => element.querySelector(sel);
const fmt = (t) => {
  if (!isFinite(t)) return '0:00.0';
  const m = Math.floor(t / 60), s = t - 60 * m;
  return `${m}:${s < 10 ? '0' : ''}${s.toFixed(1)}`;
};
const parts = () => {
  const root = q('.ms-ab');
  if (!root) return null;
  const audios = [...root.querySelectorAll('audio[data-slot]')];
  const active = audios.find((a) => a.dataset.active === '1') || audios[0];
  const other = audios.find((a) => a !== active);
  return { root, audios, active, other };
};
const length = (p) => Math.max(...p.audios.map((a) => (isFinite(a.duration) ? a.duration : 0)));
const show = () => {
  const p = parts();
  if (!p) return;
  const pos = p.root.querySelector('.ms-ab-pos');
  const total = length(p);
  if (total > 0) pos.max = total.toFixed(3);
  if (!p.root.dataset.seeking) pos.value = p.active.currentTime.toFixed(3);
  p.root.querySelector('.ms-ab-time').textContent =
    `${fmt(p.active.currentTime)} / ${fmt(total)}`;
  p.root.querySelector('.ms-ab-play').textContent = p.active.paused ? 'Play' : 'Pause';
};
// While playing, keep the muted take on the audible one's clock: the switch is then instant.
const keepInSync = () => {
  const p = parts();
  if (!p || p.active.paused) return;
  if (Math.abs(p.other.currentTime - p.active.currentTime) > 0.04) {
    p.other.currentTime = p.active.currentTime;
  }
  if (p.other.paused && !p.other.ended) p.other.play().catch(() => {});
};
const setup = () => {
  const p = parts();
  if (!p || p.root.dataset.wired) return;
  p.root.dataset.wired = '1';
  for (const a of p.audios) {
    a.volume = Math.max(0, Math.min(1, parseFloat(a.dataset.volume || '1')));
    a.muted = a.dataset.active !== '1';
    for (const ev of ['timeupdate', 'loadedmetadata', 'play', 'pause', 'seeked']) {
      a.addEventListener(ev, () => { if (a === parts()?.active) show(); });
    }
    a.addEventListener('ended', () => { for (const b of parts()?.audios || []) b.pause(); });
  }
  show();
};
const pick = (slot) => {
  const p = parts();
  if (!p) return;
  const next = p.audios.find((a) => a.dataset.slot === slot);
  if (!next || next === p.active) return;
  const at = p.active.currentTime;
  if (Math.abs(next.currentTime - at) > 0.06) next.currentTime = at;
  next.muted = false;
  p.active.muted = true;
  p.active.dataset.active = '0';
  next.dataset.active = '1';
  p.root.dataset.active = slot;
  for (const b of p.root.querySelectorAll('.ms-ab-pick')) {
    b.setAttribute('aria-pressed', b.dataset.slot === slot ? 'true' : 'false');
  }
  show();
};
const toggle = () => {
  const p = parts();
  if (!p) return;
  if (p.active.paused) {
    p.other.currentTime = p.active.currentTime;
    for (const a of p.audios) a.play().catch(() => {});
  } else {
    for (const a of p.audios) a.pause();
    p.other.currentTime = p.active.currentTime;
  }
};
element.addEventListener('click', (ev) => {
  const button = ev.target.closest('button');
  if (!button || !element.contains(button)) return;
  if (button.classList.contains('ms-ab-play')) toggle();
  else if (button.classList.contains('ms-ab-pick')) pick(button.dataset.slot);
});
element.addEventListener('input', (ev) => {
  if (!ev.target.classList.contains('ms-ab-pos')) return;
  const p = parts();
  if (!p) return;
  p.root.dataset.seeking = '1';
  for (const a of p.audios) a.currentTime = parseFloat(ev.target.value);
  delete p.root.dataset.seeking;
  show();
});
setInterval(keepInSync, 250);
watch('value', setup);
setup();
"""

PLAYER_CSS = """
.ms-ab { border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 10px; }
.ms-ab-row { display: flex; gap: 8px; align-items: center; flex-wrap: wrap; }
.ms-ab button { padding: 4px 14px; border-radius: 6px;
  border: 1px solid var(--border-color-primary);
  background: var(--button-secondary-background-fill); cursor: pointer; font-weight: 600; }
.ms-ab button[aria-pressed="true"] { background: #f97316; color: white; border-color: #f97316; }
.ms-ab-pos { flex: 1 1 200px; }
.ms-ab-time { font-variant-numeric: tabular-nums; min-width: 110px; }
.ms-ab-facts { margin-top: 8px; font-size: 0.9em; }
"""


@dataclass
class CompareView:
    first: gr.Dropdown
    second: gr.Dropdown
    blind: gr.Checkbox
    load: gr.Button
    notice: gr.HTML
    player: gr.HTML
    keep_first: gr.Button
    keep_second: gr.Button
    pair: gr.State  # {"slots": [[label, run_id, lufs, gain], ...], "blind": bool}
    facts: gr.HTML  # which is which (in blind mode only after Reveal)
    reveal: gr.Button


def _file_url(path: str) -> str:
    return "gradio_api/file=" + urllib.parse.quote(path)


def _lufs_text(lufs: float | None) -> str:
    return "silent or too short to measure" if lufs is None else f"{lufs:.1f} LUFS"


def player_html(slots: list[tuple[str, str, float, float]]) -> str:
    """The two players and the transport; `slots` = (label, url, volume, gain dB).

    Nothing in it says which result is which: the URLs are neutral copies, and the names and
    levels are shown apart (`facts_html`), in blind mode only after Reveal.
    """
    audios = "".join(
        f'<audio data-slot="{esc(label)}" data-active="{"1" if i == 0 else "0"}" '
        f'data-volume="{volume:.4f}" preload="auto" src="{esc(url)}"></audio>'
        for i, (label, url, volume, _gain) in enumerate(slots)
    )
    picks = "".join(
        f'<button type="button" class="ms-ab-pick" data-slot="{esc(label)}" '
        f'aria-pressed="{"true" if i == 0 else "false"}">{esc(label)}</button>'
        for i, (label, *_rest) in enumerate(slots)
    )
    return (
        f'<div class="ms-ab" data-active="{esc(slots[0][0])}">{audios}'
        f'<div class="ms-ab-row"><button type="button" class="ms-ab-play">Play</button>{picks}'
        f'<input type="range" class="ms-ab-pos" min="0" max="1" step="0.01" value="0" '
        f'aria-label="Position"><span class="ms-ab-time">0:00.0 / 0:00.0</span></div></div>'
    )


def facts_html(slots: list[tuple[str, RunRecord, float | None, float]]) -> str:
    """Which result each label is, and how loud: (label, record, LUFS, gain dB)."""
    rows = "".join(
        f'<div data-slot="{esc(label)}" data-run="{esc(record.id)}"><b>{esc(label)}</b> = '
        f"{esc(entry_label(record))} · {esc(_lufs_text(lufs))}, played at {gain:+.1f} dB</div>"
        for label, record, lufs, gain in slots
    )
    return f'<div class="ms-ab-facts">{rows}</div>'


BLIND_FACTS = (
    '<div class="ms-ab-facts ms-muted">Blind: X and Y are A and B in an order only the server '
    "knows. Listen, then press Reveal.</div>"
)


def entry_choices(
    studio: Studio, owner: str | None, hidden: frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    """The visitor's results with audio (takes, loops, pieces, variations), newest first."""
    page = studio.library.list(owner, per_page=CHOICES_SHOWN, status="succeeded", inner=True)
    return [(entry_label(r), r.id) for r in page.items if r.has_audio and r.id not in hidden]


class CompareHandlers:
    """Loads a pair and keeps the winner; limited to the visitor's own entries."""

    def __init__(
        self, studio: Studio, view: CompareView, hidden: Callable[[], frozenset[str]] = frozenset
    ):
        self.studio = studio
        self.view = view
        self.hidden = hidden  # results deleted a moment ago (Undo still possible)

    def refresh(self, owner_value: Any, first: str | None, second: str | None) -> tuple[Any, Any]:
        """The pickers list the visitor's results as they are now; a choice that is gone is
        cleared, one still there is left alone (the musician may be choosing right now)."""
        choices = entry_choices(self.studio, self.studio.owner(owner_value), self.hidden())
        ids = {value for _, value in choices}
        a, b = (
            gr.update(choices=choices)
            if chosen is None or chosen in ids
            else gr.update(choices=choices, value=None)
            for chosen in (first, second)
        )
        return a, b

    def _serve(self, record: RunRecord, name: str) -> str:
        """A URL for the entry's audio under a neutral name (a blind test shows no names)."""
        audio = self.studio.library.audio_file(record)
        assert audio is not None
        staged = self.studio.files.staging_dir() / f"{name}{audio.suffix}"
        staged.write_bytes(audio.read_bytes())
        cached = self.view.player.move_resource_to_block_cache(staged)
        return _file_url(str(cached))

    async def compare(
        self, owner_value: Any, first: str | None, second: str | None, blind: bool
    ) -> tuple[Any, ...]:
        owner = self.studio.owner(owner_value)
        records = [self.studio.library.get(i, owner) if i else None for i in (first, second)]
        if any(r is None or not r.has_audio for r in records) or first == second:
            note = message_html(
                "Choose two different results with audio as A and B.", kind="warning"
            )
            return gr.update(), None, note, gr.update(), gr.update(), "", gr.update()
        a, b = records
        assert a is not None and b is not None
        a_path, b_path = self.studio.library.audio_file(a), self.studio.library.audio_file(b)
        if a_path is None or b_path is None:
            note = message_html("The audio of one of them is missing from the library.")
            return gr.update(), None, note, gr.update(), gr.update(), "", gr.update()
        try:
            levels: Match = await asyncio.to_thread(match, a_path, b_path)
        except StudioError as err:
            return (gr.update(), None, message_html(str(err)), *(gr.update(),) * 2, "", gr.update())
        entries = [
            (a, levels.a_volume, levels.a.lufs, levels.a_gain_db),
            (b, levels.b_volume, levels.b.lufs, levels.b_gain_db),
        ]
        labels = ["A", "B"]
        if blind:
            labels = ["X", "Y"]
            if secrets.randbelow(2):  # which take is X is a coin toss
                entries.reverse()
        players: list[tuple[str, str, float, float]] = []
        named: list[tuple[str, RunRecord, float | None, float]] = []
        for label, (record, vol, lufs, gain) in zip(labels, entries, strict=True):
            url = await asyncio.to_thread(self._serve, record, f"take-{label.lower()}")
            players.append((label, url, vol, gain))
            named.append((label, record, lufs, gain))
        # Which is which stays on the server (a gr.State) until Reveal.
        pair = {
            "slots": [[label, record.id, lufs, gain] for label, record, lufs, gain in named],
            "blind": blind,
        }
        diff = levels.difference_db
        note = (
            f"Loudness matched: the louder take is played {abs(diff):.1f} dB quieter."
            if diff is not None and abs(diff) >= 0.05
            else "Both takes are equally loud: no gain applied."
        )
        return (
            player_html(players),
            pair,
            message_html(note, kind="info"),
            gr.update(value=f"Keep {labels[0]}", interactive=True),
            gr.update(value=f"Keep {labels[1]}", interactive=True),
            BLIND_FACTS if blind else facts_html(named),
            gr.update(visible=blind, interactive=blind),
        )

    def reveal(self, pair: dict[str, Any] | None, owner_value: Any) -> tuple[str, Any]:
        """Blind mode's end: which result X and Y are."""
        owner = self.studio.owner(owner_value)
        named = []
        for label, run_id, lufs, gain in (pair or {}).get("slots") or []:
            record = self.studio.library.get(run_id, owner)
            if record is not None:
                named.append((label, record, lufs, gain))
        if not named:
            return message_html("Compare two results first.", kind="warning"), gr.update()
        return facts_html(named), gr.update(interactive=False)

    def keep(self, index: int, pair: dict[str, Any] | None, owner_value: Any) -> str:
        """Favourite the chosen take of the pair shown."""
        slots = (pair or {}).get("slots") or []
        if len(slots) <= index:
            return message_html("Compare two results first.", kind="warning")
        label, run_id = slots[index][0], slots[index][1]
        record = self.studio.library.set_favourite(run_id, self.studio.owner(owner_value), True)
        if record is None:
            return message_html("That result is no longer in your library.")
        said = f"Kept {label}"
        if (pair or {}).get("blind"):
            said += f" (it is {entry_label(record)})"
        return message_html(f"{said}: ★ a favourite in your history.", kind="info")


def build_compare(
    studio: Studio,
    *,
    owner: gr.components.Component,
    hidden: Callable[[], frozenset[str]] = frozenset,
) -> tuple[CompareView, list[Any]]:
    """The "Compare" panel and its events; returns the view and the Keep events (after which
    the history should be listed again)."""
    with gr.Accordion("Compare A/B", open=False, elem_id="compare-box") as box:
        with gr.Row():
            first = gr.Dropdown(label="A", choices=[], value=None, elem_id="compare-a")
            second = gr.Dropdown(label="B", choices=[], value=None, elem_id="compare-b")
        with gr.Row():
            blind = gr.Checkbox(
                label="Blind: show them as X and Y until Reveal", elem_id="compare-blind"
            )
            load = gr.Button("Compare", variant="primary", elem_id="compare-load", scale=0)
        notice = gr.HTML("", elem_id="compare-notice")
        player = gr.HTML(
            EMPTY, elem_id="compare-player", js_on_load=PLAYER_JS, css_template=PLAYER_CSS
        )
        facts = gr.HTML("", elem_id="compare-facts")
        with gr.Row():
            reveal = gr.Button("Reveal", size="sm", visible=False, elem_id="compare-reveal")
            keep_first = gr.Button("Keep A", size="sm", interactive=False, elem_id="compare-keep-1")
            keep_second = gr.Button(
                "Keep B", size="sm", interactive=False, elem_id="compare-keep-2"
            )
    view = CompareView(
        first=first,
        second=second,
        blind=blind,
        load=load,
        notice=notice,
        player=player,
        keep_first=keep_first,
        keep_second=keep_second,
        pair=gr.State(None),
        facts=facts,
        reveal=reveal,
    )
    handlers = CompareHandlers(studio, view, hidden)
    # The pickers are listed when the panel opens and whenever one is clicked, not after every
    # take: a listing rebuilds both dropdowns, and most takes are never compared.
    for shown in (box.expand, first.focus, second.focus):
        shown(handlers.refresh, [owner, first, second], [first, second], **QUICK)
    load.click(
        handlers.compare,
        [owner, first, second, blind],
        [player, view.pair, notice, keep_first, keep_second, facts, reveal],
        **PRIVATE,
    )
    reveal.click(handlers.reveal, [view.pair, owner], [facts, reveal], **PRIVATE)
    keeps = [
        button.click(partial(handlers.keep, i), [view.pair, owner], [notice], **PRIVATE)
        for i, button in enumerate((keep_first, keep_second))
    ]
    return view, keeps
