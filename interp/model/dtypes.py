"""The one table of floating-point dtypes polylens accepts, for weights and for stored tensors."""

from __future__ import annotations

import torch

from interp.errors import PolylensError

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
"""Name -> torch dtype; the names are what configs, the CLI and store manifests use."""


def parse_dtype(dtype: str | torch.dtype, *, what: str = "dtype") -> torch.dtype:
    """The torch dtype of ``dtype`` (a name in ``DTYPES`` or a dtype); one-line error otherwise."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise PolylensError(f"unknown {what} {dtype!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def dtype_name(dtype: torch.dtype | str) -> str:
    """The name ``DTYPES`` uses for a dtype (``torch.bfloat16`` -> ``bfloat16``)."""
    return str(dtype).removeprefix("torch.")


AUTO = "auto"
"""The compute dtype that follows the machine: the checkpoint's own on a GPU, float32 on a CPU."""


def resolve_dtype(
    dtype: str | torch.dtype | None, *, on_gpu: bool, checkpoint: object = None
) -> torch.dtype:
    """The weights' compute dtype for a load: ``None`` is float32, ``"auto"`` is resolved.

    ``"auto"`` keeps a checkpoint's half-precision dtype (``checkpoint``: its config's ``dtype``,
    a torch dtype or a name) where a GPU computes, because that is what the model was trained
    and released in and halves the memory; on a CPU it is float32, because CPU kernels in
    bfloat16 are slow and lose precision for no memory the machine lacks. A checkpoint that
    states no floating dtype loads in float32.
    """
    if dtype is None:
        return torch.float32
    if dtype != AUTO:
        return parse_dtype(dtype)
    if not on_gpu:
        return torch.float32
    name = dtype_name(checkpoint) if checkpoint is not None else None
    return DTYPES.get(name, torch.float32)
