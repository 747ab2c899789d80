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
