"""The page's CSS and the little JavaScript it needs (keyboard shortcut, token in the browser)."""

from __future__ import annotations

import json

# localStorage key of a visitor's own Replicate token: it never leaves the browser except as
# the input of their own Generate / Import events.
TOKEN_KEY = "musicgen-studio.replicate-token"

CSS = """
.ms-header h1 { margin: 0 0 4px 0; font-size: 1.6em; }
.ms-header p { margin: 0; color: var(--body-text-color-subdued); }
.ms-box { padding: 8px 12px; border-radius: 8px; margin: 4px 0; line-height: 1.4; }
.ms-box ul { margin: 4px 0 0 18px; padding: 0; }
.ms-box p { margin: 0; }
.ms-error { background: #fee2e2; color: #7f1d1d; border: 1px solid #fca5a5; }
.ms-warning { background: #fef3c7; color: #78350f; border: 1px solid #fcd34d; }
.ms-info { background: #e0f2fe; color: #0c4a6e; border: 1px solid #7dd3fc; }
.ms-status { font-size: 1.05em; padding: 4px 0; }
.ms-status-label { font-weight: 600; }
.ms-status-failed .ms-status-label, .ms-status-aborted .ms-status-label,
.ms-status-lost .ms-status-label { color: #b91c1c; }
.ms-status-succeeded .ms-status-label { color: #15803d; }
.ms-reason { margin-top: 4px; color: #b91c1c; white-space: pre-wrap; word-break: break-word; }
.ms-progress { height: 14px; background: var(--neutral-200, #e5e7eb); border-radius: 7px;
  overflow: hidden; }
.ms-progress-fill { height: 100%; background: #f97316; transition: width 0.3s ease; }
.ms-progress-text { font-size: 0.85em; color: var(--body-text-color-subdued); margin-top: 2px; }
.ms-facts { border-collapse: collapse; width: 100%; font-size: 0.95em; }
.ms-facts th { text-align: left; padding: 2px 12px 2px 0; white-space: nowrap;
  color: var(--body-text-color-subdued); font-weight: 500; }
.ms-facts td { padding: 2px 0; word-break: break-all; }
.ms-facts, .ms-facts th, .ms-facts td, .ms-facts tr { border: none !important;
  background: transparent !important; }
.ms-clip-info { font-size: 0.9em; color: var(--body-text-color-subdued); }
.ms-grid { display: grid !important; grid-template-columns: repeat(auto-fill, minmax(280px, 1fr));
  gap: 12px; }
.ms-grid > .ms-card { min-width: 0 !important; }
.ms-card { border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 10px;
  background: var(--block-background-fill); }
.ms-card-prompt { font-weight: 600; white-space: pre-wrap; word-break: break-word; margin: 4px 0; }
.ms-card-meta { font-size: 0.85em; color: var(--body-text-color-subdued); }
.ms-card-actions { display: flex; align-items: stretch; gap: 4px !important; flex-wrap: wrap;
  margin-top: 6px; }
/* A card's buttons are plain HTML (ui.history_cards) dressed as Gradio's small buttons. */
.ms-btn { border: var(--button-border-width, 1px) solid var(--button-secondary-border-color);
  background: var(--button-secondary-background-fill); color: var(--button-secondary-text-color);
  border-radius: var(--button-small-radius, 6px); padding: var(--button-small-padding, 4px 10px);
  font-size: var(--button-small-text-size, 0.85em); font-weight: 600;
  line-height: 1.4; cursor: pointer; }
.ms-btn:hover { background: var(--button-secondary-background-fill-hover); }
.ms-btn:disabled { opacity: 0.5; cursor: not-allowed; }
.ms-parts { display: flex; width: 100%; height: 28px; border-radius: 6px; overflow: hidden;
  margin: 6px 0; font-size: 0.8em; }
.ms-part { display: flex; align-items: center; justify-content: center; overflow: hidden;
  white-space: nowrap; color: #fff; border-right: 2px solid var(--background-fill-primary); }
.ms-part-0 { background: #f97316; }
.ms-part-1 { background: #fb923c; }
.ms-part[data-part="0"] { background: #6b7280; }
.ms-parts-table { font-size: 0.85em; width: 100%; }
.ms-parts-scroll { overflow-x: auto; max-width: 100%; }  /* a phone scrolls the table */
.ms-part-of { font-weight: 600; margin-bottom: 4px; }
.ms-take { font-size: 0.9em; }
.ms-card-actions button { flex: 1 1 auto; min-width: 0 !important; }
.ms-muted { color: var(--body-text-color-subdued); font-weight: 400; }
.ms-badge { display: inline-block; font-size: 0.75em; padding: 1px 8px; border-radius: 999px;
  background: var(--neutral-200, #e5e7eb); color: #111827; text-transform: uppercase;
  letter-spacing: 0.03em; }
.ms-badge-succeeded { background: #dcfce7; color: #14532d; }
.ms-badge-failed, .ms-badge-aborted, .ms-badge-lost { background: #fee2e2; color: #7f1d1d; }
.ms-badge-canceled { background: #fef3c7; color: #78350f; }
.ms-badge-processing, .ms-badge-starting, .ms-badge-pending { background: #e0f2fe;
  color: #0c4a6e; }
.ms-fav { color: #f59e0b; }
.ms-empty { padding: 16px; color: var(--body-text-color-subdued); }
.ms-history-summary { text-align: center; padding-top: 6px; }
#history-pager { align-items: center; }
/* The first screen: a one-line header, the prompt and Generate beside the track. */
.ms-header { display: flex; align-items: baseline; gap: 12px; flex-wrap: wrap; }
.ms-header h1 { font-size: 1.35em; }
.ms-header p { font-size: 0.9em; }
#track-col { gap: 6px; }
.ms-kind { display: inline-block; font-size: 0.8em; font-weight: 600; padding: 1px 8px;
  border-radius: 999px; background: #ffedd5; color: #7c2d12; }
.ms-card-more { margin-top: 4px; }
.ms-card-more > summary { cursor: pointer; padding: 2px 0; font-size: 0.85em;
  color: var(--body-text-color-subdued); }
.ms-takes { list-style: none; margin: 4px 0; padding: 0; font-size: 0.85em; }
.ms-takes li { margin: 4px 0; }
.ms-takes audio, audio.ms-card-audio { width: 100%; height: 32px; display: block; }
.ms-details { font-size: 0.85em; color: var(--body-text-color-subdued); margin-top: 4px;
  word-break: break-all; }
.ms-track-actions { gap: 4px !important; flex-wrap: wrap; }
.ms-track-actions button { flex: 1 1 auto; min-width: 0 !important; }
#track-format { flex: 2 1 150px; }
#track-format .wrap { flex-wrap: nowrap; gap: 4px; }
.ms-undo { position: fixed; left: 50%; transform: translateX(-50%); bottom: 84px;
  z-index: 60; width: min(520px, 92vw) !important; background: #111827; color: #fff;
  border-radius: 10px; padding: 6px 10px; align-items: center;
  box-shadow: 0 4px 18px rgba(0, 0, 0, 0.3); }
.ms-undo .ms-undo-text { color: #fff; }
/* An empty message line takes no room (no gap for nothing). */
#form-notice:not(:has(.ms-box)), #form-errors:not(:has(.ms-box)),
#track-marks:not(:has(.ms-parts)), #track-takes:not(:has(.ms-takes)),
#cost-estimate:not(:has(.ms-cost)), #history-notice:not(:has(.ms-box)),
#extend-status:not(:has(*)), #variations-status:not(:has(*)), #loop-errors:not(:has(.ms-box)),
#compare-notice:not(:has(.ms-box)), #compare-facts:not(:has(.ms-ab-facts)) {
  display: none !important; }
/* Phones: Generate stays on screen (a bar at the bottom); nothing runs under an arrow. */
@media (max-width: 640px) {
  .ms-header p { display: none; }
  #generate-bar { position: fixed; left: 0; right: 0; bottom: 0; z-index: 50; margin: 0;
    padding: 8px 12px; background: var(--background-fill-primary);
    border-top: 1px solid var(--border-color-primary); flex-wrap: nowrap; }
  body { padding-bottom: 76px; }
  .ms-undo { bottom: 76px; }
  #local-model input, #normalization input { text-overflow: ellipsis; padding-right: 28px; }
  #history-favourites { min-width: 150px !important; flex: 1 0 150px !important; }
  #history-favourites label { white-space: nowrap; }
}
"""

# Ctrl+Enter (Cmd+Enter on a Mac) presses Generate from anywhere on the page.
HEAD = """
<script>
document.addEventListener("keydown", (event) => {
  if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey)) return;
  const button = document.getElementById("generate-btn");
  if (button && !button.disabled) {
    event.preventDefault();
    button.click();
  }
});
</script>
"""


def _js_string(text: str) -> str:
    return json.dumps(text)


def token_load_js(banner_html: str) -> str:
    """On page load: the token from this browser's storage, and the banner if there is none."""
    return (
        "() => { let t = ''; try { t = localStorage.getItem("
        f"{_js_string(TOKEN_KEY)}) || ''; }} catch (e) {{}} "
        f"return [t, t ? '' : {_js_string(banner_html)}]; }}"
    )


def token_save_js(banner_html: str) -> str:
    """When the visitor types or pastes a token: keep it in this browser only."""
    return (
        "(t) => { const v = (t || '').trim(); try { if (v) localStorage.setItem("
        f"{_js_string(TOKEN_KEY)}, v); else localStorage.removeItem({_js_string(TOKEN_KEY)}); "
        f"}} catch (e) {{}} return v ? '' : {_js_string(banner_html)}; }}"
    )


def token_forget_js(banner_html: str) -> str:
    """Forget the token: removed from this browser, the field emptied."""
    return (
        f"() => {{ try {{ localStorage.removeItem({_js_string(TOKEN_KEY)}); }} catch (e) {{}} "
        f"return ['', {_js_string(banner_html)}]; }}"
    )


SCROLL_TO_TRACK_JS = (
    "() => { const el = document.getElementById('track-col'); "
    "if (el) el.scrollIntoView({behavior: 'smooth', block: 'start'}); }"
)


def scroll_to_js(elem_id: str) -> str:
    """Bring an element (a panel just opened) into view."""
    return (
        f"() => {{ const el = document.getElementById({_js_string(elem_id)}); "
        "if (el) setTimeout(() => el.scrollIntoView({behavior: 'smooth', block: 'start'}), 50); }"
    )


SCROLL_TO_FORM_JS = (
    "() => { const el = document.getElementById('form-notice'); "
    "if (el) el.scrollIntoView({behavior: 'smooth', block: 'start'}); }"
)
