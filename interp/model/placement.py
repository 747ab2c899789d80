"""Where a model's modules compute when it is spread over devices (Hugging Face ``device_map``).

``load_model(..., device_map="auto")`` lets accelerate place blocks on several GPUs, the CPU or
the disk. accelerate then attaches a hook to each placed module that moves its inputs to its
*execution device* and, for offloaded modules, loads the weights just in time (they sit on the
``meta`` device meanwhile). Analyses that call modules directly (the lens calls the final norm and
unembedding) or read weights (the fingerprint) ask here instead of reading a parameter's device.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from interp.errors import PolylensError


def execution_device(module: nn.Module, default: torch.device | None = None) -> torch.device:
    """The device ``module`` computes on.

    accelerate's execution device where it placed the module, else the device of its first
    weight that is not offloaded, else ``default``.
    """
    hook = getattr(module, "_hf_hook", None)
    for h in getattr(hook, "hooks", [hook]):  # a SequentialHook holds several
        device = getattr(h, "execution_device", None)
        if device is not None:
            return torch.device(device)
    for p in module.parameters():
        if p.device.type != "meta":
            return p.device
    if default is None:
        raise PolylensError("cannot tell where the model computes: its weights are offloaded")
    return default


def main_device(hf: nn.Module) -> torch.device:
    """The device accelerate computes offloaded modules on.

    The first GPU of the device map, or the CPU when the map has none (the rule of
    ``accelerate.dispatch_model``).
    """
    placed = getattr(hf, "hf_device_map", None) or {}
    gpus = [d for d in placed.values() if d not in ("cpu", "disk")]
    return torch.device(gpus[0]) if gpus else torch.device("cpu")


def is_offloaded(hf: nn.Module) -> bool:
    """Whether some weights are not in memory (accelerate loads them per forward pass)."""
    return any(p.device.type == "meta" for p in hf.parameters())


def materialized_state(hf: nn.Module) -> dict[str, Tensor]:
    """``hf.state_dict()`` with every offloaded tensor read from where accelerate keeps it."""
    state = hf.state_dict()
    for name, tensor in state.items():
        if tensor.device.type == "meta":
            owner, _, leaf = name.rpartition(".")
            hook = getattr(hf.get_submodule(owner), "_hf_hook", None)
            weights = getattr(hook, "weights_map", None)
            if weights is None or leaf not in weights:
                raise PolylensError(f"{name} is offloaded and its weights cannot be found")
            state[name] = weights[leaf]
    return state
