"""Copies between host and device that never make the host wait for the GPU.

A plain ``tensor.to("cuda")`` from pageable memory, or ``.to("cpu")`` of a GPU result, blocks the
host until the GPU has finished everything queued before it: once per batch, that leaves the GPU
idle while the host tokenizes and pads the next batch. Here host->device copies go through pinned
memory asynchronously, and device->host copies land in pinned memory and are waited for only when
their rows are needed (after the next batch was launched). On CPU both are plain ``.to``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` (on the host) on ``device``; asynchronous on CUDA."""
    if device.type != "cuda":
        return tensor.to(device)
    # The caching host allocator keeps the pinned block alive until the copy has run.
    return tensor.pin_memory().to(device, non_blocking=True)


@dataclass
class HostCopy:
    """A device->host copy in flight; ``result()`` waits for it (and only for it)."""

    pinned: Tensor
    done: torch.cuda.Event | None

    @classmethod
    def start(cls, tensor: Tensor) -> HostCopy:
        """Queue the copy of ``tensor`` to the host behind the work that produces it."""
        if tensor.device.type != "cuda":
            return cls(tensor, None)
        pinned = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        pinned.copy_(tensor, non_blocking=True)
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(tensor.device))
        return cls(pinned, done)

    def wait(self) -> Tensor:
        """The host tensor, once the copy has finished.

        On CUDA it is a pinned block that the allocator reuses once dropped: copy out what you
        keep.
        """
        if self.done is not None:
            self.done.synchronize()
        return self.pinned
