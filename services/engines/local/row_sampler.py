"""Each row of a batch drawn with its own seed, sampling settings and guidance.

`transformers` samples a whole batch from torch's one global generator with one temperature, one
top-k and one guidance scale. `RowSampler` is a logits processor that does the drawing itself:
every row (take) combines its own conditional and unconditional logits with its own guidance
scale (audiocraft's `uncond + (cond - uncond) * scale`, so 0 is the unconditional model and 1 the
conditional one), applies its own temperature and top-k or top-p, and draws its codebooks' next
tokens from its own `torch.Generator`. What a row draws depends only on its own logits and
seed, never on the other rows. It hands back scores that put everything on the drawn tokens,
so `generate` runs greedy (argmax) and its own guidance step, when present, changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.musicgen import GenerationRequest

# What the drawn token's rivals get: low but finite, so that transformers' own guidance step
# (uncond + (cond - uncond) * scale over two equal halves) stays exact instead of NaN.
LOSER = -1.0e4
# transformers doubles the batch for its guidance only above this scale; it is just the switch
# that makes it compute the unconditional half (RowSampler applies each row's real scale).
DOUBLING_SCALE = 2.0


@dataclass(frozen=True)
class RowSettings:
    """One take's sampling: audiocraft's meaning (top_p > 0 wins over top_k; 0 turns one off)."""

    seed: int
    temperature: float
    top_k: int
    top_p: float
    guidance: float

    @classmethod
    def of(cls, request: GenerationRequest, seed: int) -> RowSettings:
        return cls(
            seed=seed,
            temperature=float(request.temperature),
            top_k=int(request.top_k),
            top_p=float(request.top_p),
            guidance=float(request.classifier_free_guidance),
        )


def needs_unconditional(rows: Sequence[RowSettings]) -> bool:
    """Whether any row mixes in the unconditional logits (every scale but exactly 1)."""
    return any(row.guidance != 1.0 for row in rows)


def generate_kwargs(rows: Sequence[RowSettings]) -> dict[str, Any]:
    """`generate` arguments for a batch drawn by `RowSampler`: greedy, guidance only as the
    switch that computes the unconditional half."""
    return {
        "do_sample": False,
        "guidance_scale": DOUBLING_SCALE if needs_unconditional(rows) else 1.0,
        "temperature": None,
        "top_k": None,
        "top_p": None,
    }


def _draw(logits: Any, row: RowSettings, generator: Any) -> Any:
    """One token per codebook row of `logits` (codebooks, vocab), drawn as audiocraft does."""
    import torch

    if row.temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / row.temperature, dim=-1)
    if row.top_p > 0:
        ordered, index = probs.sort(dim=-1, descending=True)
        # Keep the likeliest tokens until their mass reaches top_p (the first always stays).
        drop = ordered.cumsum(dim=-1) - ordered > row.top_p
        ordered = ordered.masked_fill(drop, 0.0)
        ordered = ordered / ordered.sum(dim=-1, keepdim=True)
        picked = torch.multinomial(ordered, 1, generator=generator)
        return index.gather(-1, picked)[:, 0]
    if 0 < row.top_k < probs.shape[-1]:
        kth = probs.topk(row.top_k, dim=-1).values[:, -1:]
        probs = probs * (probs >= kth)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


class RowSampler:
    """A `LogitsProcessor` (transformers calls it with the step's scores) for a batch of rows.

    Scores come as (rows * codebooks, vocab), or twice that with the unconditional half below
    the conditional one when the batch is guided.
    """

    def __init__(self, rows: Sequence[RowSettings], codebooks: int, device: Any) -> None:
        import torch

        self.rows = list(rows)
        self.codebooks = codebooks
        self.generators = [
            torch.Generator(device=device).manual_seed(row.seed) for row in self.rows
        ]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        k = self.codebooks
        width = len(self.rows) * k
        guided = scores.shape[0] == 2 * width
        picked = []
        for i, (row, generator) in enumerate(zip(self.rows, self.generators, strict=True)):
            logits = scores[i * k : (i + 1) * k].float()
            if guided and row.guidance != 1.0:
                uncond = scores[width + i * k : width + (i + 1) * k].float()
                # 0 is the unconditional model exactly (the formula would round it).
                logits = uncond if row.guidance == 0 else uncond + (logits - uncond) * row.guidance
            picked.append(_draw(logits, row, generator))
        tokens = torch.cat(picked).to(scores.device)
        shape = (width, scores.shape[-1])
        chosen = torch.full(shape, LOSER, dtype=scores.dtype, device=scores.device)
        chosen.scatter_(1, tokens[:, None], 0.0)
        return torch.cat([chosen, chosen]) if guided else chosen
