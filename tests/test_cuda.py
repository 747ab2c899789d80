"""CUDA tier: device paths that only exist on a GPU (skipped without one)."""

import pytest
import torch
from tiny import PROMPTS, tiny_model

import interp
from interp.model.transfer import HostCopy, to_device

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_asynchronous_copies_round_trip():
    x = torch.randn(64, 19, 640)
    on_gpu = to_device(x, torch.device("cuda"))
    doubled = on_gpu * 2
    copy = HostCopy.start(doubled)
    doubled.zero_()  # queued after the copy on the same stream: must not reach the host
    assert torch.equal(copy.wait(), x * 2)


def test_cpu_tuned_lens_on_gpu_residuals():
    from interp.lens import apply_lens
    from interp.lens.tuned import TunedLens

    model = tiny_model("llama")
    assert model.device.type == "cuda"
    acts = interp.extract(model, PROMPTS, progress=False).to("cuda")
    lens = TunedLens(model.n_layers, model.d_model)  # built on the CPU, as a user would
    tuned = apply_lens(model, acts, top_k=4, translators=lens)
    plain = apply_lens(model, acts, top_k=4)
    assert torch.equal(tuned.top_ids, plain.top_ids)
