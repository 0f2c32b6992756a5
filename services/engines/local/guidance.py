"""Classifier-free guidance with audiocraft's meaning, as `generate` arguments.

audiocraft (and so Replicate) always computes the conditional and the unconditional logits and
samples from `uncond + (cond - uncond) * scale`: 0 is the unconditional model alone, 1 the
conditional alone. `transformers` only batches the unconditional half above 1 and reads any other
value as "no guidance" (0 even crashes: it runs an unbatched guidance pass the model can't take).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Any scale above 1 makes transformers build the [conditional; unconditional] batch; its own
# guidance step then receives two equal halves from `AudiocraftGuidance` and passes them through.
DOUBLING_SCALE = 2.0


def guidance_kwargs(scales: Sequence[float]) -> dict[str, Any]:
    """`generate` arguments for one guidance scale per row (one row: a single take)."""
    if all(scale == 1 for scale in scales):
        return {"guidance_scale": 1.0}  # the conditional logits alone: no second half to pay for
    if len(set(scales)) == 1 and scales[0] > 1:
        return {"guidance_scale": float(scales[0])}  # transformers' own step is audiocraft's
    from transformers import LogitsProcessorList

    return {
        "guidance_scale": DOUBLING_SCALE,
        "logits_processor": LogitsProcessorList([AudiocraftGuidance(scales)]),
    }


class AudiocraftGuidance:
    """A logits processor on the doubled batch: each row's `uncond + (cond - uncond) * scale`,
    written to both halves, so that transformers' guidance step that follows returns it as is
    (`u + (c - u) * g` with c == u is u, exactly).

    MusicGen's rows are (take, codebook) pairs, takes first: each take's scale covers its
    codebooks' rows.
    """

    def __init__(self, scales: Sequence[float]) -> None:
        self.scales = [float(scale) for scale in scales]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        rows = scores.shape[0] // 2
        cond, uncond = scores[:rows], scores[rows:]
        per_take = torch.tensor(self.scales, dtype=scores.dtype, device=scores.device)
        scale = per_take.repeat_interleave(rows // len(self.scales))[:, None]
        mixed = uncond + (cond - uncond) * scale
        return torch.cat([mixed, mixed], dim=0)
