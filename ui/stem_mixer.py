"""The stems of a result as a small mixer: one row per stem with mute and solo, played together
by one script for the whole page (HTML audio elements, kept in step with the first one)."""

from __future__ import annotations

from services.analysis.stems import stem_file, stem_names
from services.library import RunRecord
from ui.context import Studio
from ui.formatting import esc
from ui.track import file_url


def mixer_html(studio: Studio, record: RunRecord) -> str:
    """The stems as a small mixer: one row per stem with mute and solo; the page's script
    (MIXER_HEAD) plays them together."""
    rows = []
    for name in stem_names(record):
        path = studio.files.servable(stem_file(studio.library, record, name))
        if path is None:
            continue
        rows.append(
            f'<div class="ms-stem" data-stem="{esc(name)}">'
            f'<span class="ms-stem-name">{esc(name)}</span>'
            f'<button type="button" class="ms-mute" aria-pressed="false" '
            f'title="Mute {esc(name)}">M</button>'
            f'<button type="button" class="ms-solo" aria-pressed="false" '
            f'title="Solo {esc(name)}">S</button>'
            f'<audio preload="auto" src="{esc(file_url(path))}" data-stem="{esc(name)}">'
            "</audio></div>"
        )
    if not rows:
        return ""
    return (
        f'<div class="ms-mixer" data-run="{esc(record.id)}">'
        '<div class="ms-mixer-transport"><button type="button" class="ms-mix-play">▶ Play</button>'
        '<button type="button" class="ms-mix-stop">■ Stop</button>'
        f'<span class="ms-clip-info">{len(rows)} stems ({esc((record.stems or {}).get("model"))})'
        "</span></div>"
        f"{''.join(rows)}</div>"
    )


# One script for every mixer on the page (event delegation: mixers come and go).
MIXER_HEAD = """
<script>
(() => {
  const audible = (mixer) => {
    const rows = [...mixer.querySelectorAll(".ms-stem")];
    const on = (row, kind) => row.querySelector(kind).getAttribute("aria-pressed") === "true";
    const solo = rows.some((r) => on(r, ".ms-solo"));
    for (const row of rows) {
      const muted = on(row, ".ms-mute");
      const soloed = on(row, ".ms-solo");
      row.querySelector("audio").muted = solo ? !soloed : muted;
      row.classList.toggle("ms-silent", row.querySelector("audio").muted);
    }
  };
  document.addEventListener("click", (event) => {
    const button = event.target.closest(".ms-mixer button");
    if (!button) return;
    const mixer = button.closest(".ms-mixer");
    const players = [...mixer.querySelectorAll("audio")];
    if (button.classList.contains("ms-mute") || button.classList.contains("ms-solo")) {
      const on = button.getAttribute("aria-pressed") !== "true";
      button.setAttribute("aria-pressed", on ? "true" : "false");
      audible(mixer);
    } else if (button.classList.contains("ms-mix-play")) {
      audible(mixer);
      const at = players[0] ? players[0].currentTime : 0;
      if (players.every((p) => p.paused)) {
        for (const p of players) { p.currentTime = at; p.play().catch(() => {}); }
        button.textContent = "❚❚ Pause";
      } else {
        for (const p of players) p.pause();
        button.textContent = "▶ Play";
      }
    } else if (button.classList.contains("ms-mix-stop")) {
      for (const p of players) { p.pause(); p.currentTime = 0; }
      mixer.querySelector(".ms-mix-play").textContent = "▶ Play";
    }
  });
  // Keep the stems together: the first one leads, the others follow it.
  document.addEventListener("timeupdate", (event) => {
    const lead = event.target;
    const mixer = lead.closest && lead.closest(".ms-mixer");
    if (!mixer || mixer.querySelector("audio") !== lead) return;
    for (const p of mixer.querySelectorAll("audio")) {
      const drift = Math.abs(p.currentTime - lead.currentTime);
      if (p !== lead && drift > 0.05) p.currentTime = lead.currentTime;
    }
  }, true);
})();
</script>
"""
MIXER_CSS = """
.ms-mixer { display: flex; flex-direction: column; gap: 4px; }
.ms-mixer-transport { display: flex; gap: 8px; align-items: center; flex-wrap: wrap; }
.ms-stem { display: flex; gap: 6px; align-items: center; }
.ms-stem-name { min-width: 64px; font-weight: 600; }
.ms-stem.ms-silent .ms-stem-name { opacity: 0.45; text-decoration: line-through; }
.ms-mixer button { border: 1px solid var(--border-color-primary); border-radius: 6px;
  padding: 2px 10px; min-width: 36px; background: var(--button-secondary-background-fill); }
.ms-mixer button[aria-pressed="true"].ms-mute { background: #fde68a; }
.ms-mixer button[aria-pressed="true"].ms-solo { background: #bbf7d0; }
"""
