"""PyTorch forward hooks on the residual stream, alive only inside a context manager.

Hooks are global state on the model: ``residual_hooks`` removes every handle in ``finally``, so
an exception inside a batch never leaves one behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from jaxtyping import Float
from torch import Tensor, nn

Select = Callable[[Float[Tensor, "batch seq d_model"]], Float[Tensor, "rows d_model"]]


class StopForward(Exception):
    """Raised by the deepest hook so the forward pass ends after the last layer it needs."""


def _hidden(x: Tensor | tuple) -> Tensor:
    # Decoder layers return a tensor in recent transformers, a tuple (hidden, ...) in older ones.
    return x[0] if isinstance(x, tuple) else x


@contextmanager
def residual_hooks(
    blocks: nn.ModuleList,
    layers: Sequence[int],
    select: Select,
    *,
    stop_after_deepest: bool = True,
) -> Iterator[dict[int, Tensor]]:
    """Record ``select(residual)`` at each layer while the context is open.

    Layer 0 is block 0's input (the embedding output); layer i is block i-1's raw output.
    Yields a dict filled during the forward pass: layer -> ``[rows, d_model]``. With
    ``stop_after_deepest`` the deepest hook raises ``StopForward`` once it has recorded, which the
    caller catches: nothing after the last requested layer runs (no final norm, no unembedding).
    """
    captured: dict[int, Tensor] = {}
    deepest = max(layers)

    def record(layer: int, hidden: Tensor) -> None:
        captured[layer] = select(hidden)
        if stop_after_deepest and layer == deepest:
            raise StopForward

    def pre_hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        record(0, args[0] if args else kwargs["hidden_states"])

    def post_hook_for(layer: int) -> Callable:
        def post_hook(_module: nn.Module, _args: tuple, output: Tensor | tuple) -> None:
            record(layer, _hidden(output))

        return post_hook

    handles = []
    try:
        if 0 in layers:
            handles.append(blocks[0].register_forward_pre_hook(pre_hook, with_kwargs=True))
        for layer in layers:
            if layer > 0:
                handles.append(blocks[layer - 1].register_forward_hook(post_hook_for(layer)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()
