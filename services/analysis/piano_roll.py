"""A piano roll of transcribed notes as a PNG picture (Pillow, which Gradio already brings)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

WIDTH = 960
ROW = 6  # pixels per semitone
MARGIN = 28  # the left band with the octave names
BACKGROUND = (24, 24, 32)
OCTAVE_LINE = (70, 70, 90)
BEAT_LINE = (40, 40, 54)
LABEL = (170, 170, 190)


def _note_name(pitch: int) -> str:
    return f"C{pitch // 12 - 1}"


def render_piano_roll(
    notes: Sequence[tuple[float, float, int, float]],
    seconds: float,
    dest: Path,
    bpm: float | None = None,
) -> Path:
    """Draw `notes` ((start s, end s, MIDI pitch, velocity 0..1)) over `seconds`, one row per
    semitone, a line at every C and at every beat when the tempo is known; write PNG `dest`."""
    pitches = [n[2] for n in notes] or [60]
    low = (min(pitches) // 12) * 12
    high = (max(pitches) // 12 + 1) * 12
    height = (high - low) * ROW + 1
    span = max(seconds, max((n[1] for n in notes), default=0.0), 0.1)
    scale = (WIDTH - MARGIN) / span
    image = Image.new("RGB", (WIDTH, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    if bpm:
        beat = 60.0 / bpm
        for k in range(int(span / beat) + 1):
            x = MARGIN + round(k * beat * scale)
            draw.line([(x, 0), (x, height)], fill=BEAT_LINE)
    for pitch in range(low, high + 1, 12):
        y = (high - pitch) * ROW
        draw.line([(0, y), (WIDTH, y)], fill=OCTAVE_LINE)
        if pitch < high:
            draw.text((2, y - ROW * 2), _note_name(pitch), fill=LABEL)
    for start, end, pitch, velocity in notes:
        x0 = MARGIN + round(start * scale)
        x1 = max(x0 + 1, MARGIN + round(end * scale))
        y = (high - pitch - 1) * ROW + 1
        warm = int(120 + 135 * max(0.0, min(1.0, velocity)))
        draw.rectangle([(x0, y), (x1, y + ROW - 2)], fill=(warm, 160, 255 - warm // 2))
    dest.parent.mkdir(parents=True, exist_ok=True)
    image.save(dest, format="PNG")
    return dest
