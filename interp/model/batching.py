"""Left-padded batches of token ids: the one way polylens lays prompts out for a forward pass.

Left padding puts every prompt's last real token at position -1, where extraction, the lens and
generation read. Position ids count real tokens only, as in generation, so a padded prompt sees
the same positions as it would alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from interp.model.transfer import to_device


def pad_batch(
    token_ids: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> dict[str, Tensor]:
    """Left-pad a batch; position ids count real tokens only, as in generation."""
    seq_len = max(len(ids) for ids in token_ids)
    input_ids = torch.full((len(token_ids), seq_len), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_ids), seq_len), dtype=torch.long)
    for row, ids in enumerate(token_ids):
        input_ids[row, seq_len - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        mask[row, seq_len - len(ids) :] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return {
        "input_ids": to_device(input_ids, device),
        "attention_mask": to_device(mask, device),
        "position_ids": to_device(position_ids, device),
    }
