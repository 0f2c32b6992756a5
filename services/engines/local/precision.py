"""The numeric precision the model runs at, per device (`MUSICGEN_LOCAL_PRECISION`).

`auto` picks what is fastest where it runs: int8 weights for the decoder's linear layers on a
CPU (the decoder is nearly all of a take's time; the T5 text encoder runs once per take and
EnCodec once at the end, so both stay float32), float16 on CUDA and on Apple's MPS. `fp32` is
the reference: plain `transformers`, one setting away.

int8 uses torch's dynamic quantization (`quantize_dynamic`, fbgemm kernels): on this project's
CPU (AVX2, no VNNI) `torchao`'s int8 configurations ran in eager mode no faster than float32
(weight-only int8 twice as slow), while `quantize_dynamic` was about 1.8x faster on the
decoder's matrix shapes. See README, Performance -> Local engine.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Literal

log = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16", "int8")


def parse_precision(value: str) -> str:
    """A `MUSICGEN_LOCAL_PRECISION` value, or "auto" (with a warning) when it is unknown."""
    name = value.strip().lower() or "auto"
    if name not in PRECISIONS:
        log.warning(
            "MUSICGEN_LOCAL_PRECISION=%s is not one of %s: choosing automatically",
            value,
            PRECISIONS,
        )
        return "auto"
    return name


def resolve_precision(setting: str, device: str) -> Precision:
    """What `setting` means on `device` ("cuda", "mps" or "cpu").

    int8 (dynamic quantization) only runs on a CPU: asked for elsewhere it becomes float16.
    """
    if setting == "auto":
        return "int8" if device == "cpu" else "fp16"
    if setting == "int8" and device != "cpu":
        log.warning("int8 runs on the CPU only: using fp16 on %s", device)
        return "fp16"
    if setting in ("fp32", "fp16", "bf16", "int8"):
        return setting  # type: ignore[return-value]  # checked just above
    return "fp32"


def load_dtype(precision: Precision) -> Any:
    """The torch dtype to load the weights in (int8 quantizes float32 weights after loading)."""
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)


def quantize_decoder(model: Any) -> None:
    """Swap the decoder's `nn.Linear` layers (attention, feed-forward, the codebook heads) for
    int8-weight ones, in place; activations are quantized per call, outputs stay float32."""
    import torch

    with warnings.catch_warnings():
        # torch marks eager-mode quantization as "moving to torchao"; it is still the fast path
        # on CPUs without VNNI (measured; see the module's docstring).
        warnings.simplefilter("ignore")
        # In place: a copy would hold the float32 and the int8 decoder at once (peak memory).
        quantize: Any = torch.ao.quantization.quantize_dynamic  # untyped in torch
        quantize(model.decoder, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def apply_precision(model: Any, precision: Precision) -> Any:
    """`model` (loaded in `load_dtype(precision)`) made ready to run at `precision`."""
    if precision == "int8":
        quantize_decoder(model)
    return model
