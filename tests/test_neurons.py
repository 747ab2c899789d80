"""Unit tier: LAPE, the selection rule, deactivation through mlp_act, the ablation matrix."""

import math

import pytest
import torch

from interp import PolylensError, intervene, recording
from interp.analysis import neurons as nrn


def test_lape_uniform_is_maximal_and_one_hot_is_zero():
    probs = torch.rand(2, 5, 4, generator=torch.Generator().manual_seed(0))
    uniform = torch.full((2, 5, 4), 0.3)
    assert torch.allclose(nrn.lape(uniform), torch.full((2, 5), math.log(4)))
    got = nrn.lape(probs)
    for layer in range(2):  # by hand: the entropy of each neuron's probabilities, normalised
        for neuron in range(5):
            row = probs[layer, neuron].tolist()
            p = [x / sum(row) for x in row]
            hand = -sum(x * math.log(x) for x in p)
            assert float(got[layer, neuron]) == pytest.approx(hand, rel=1e-5)
    one_hot = torch.zeros(1, 1, 4)
    one_hot[..., 2] = 0.9
    assert nrn.lape(one_hot).item() == pytest.approx(0.0, abs=1e-6)


def test_selection_finds_planted_neurons():
    g = torch.Generator().manual_seed(0)
    probs = 0.2 + 0.05 * torch.rand(3, 100, 4, generator=g)  # [layer, neuron, lang]
    probs[1, 7] = torch.tensor([0.0, 0.9, 0.0, 0.01])  # specific to language 1
    probs[2, 3] = torch.tensor([0.8, 0.0, 0.0, 0.85])  # specific to languages 0 and 3
    probs[0, 5] = torch.tensor([0.01, 0.0, 0.0, 0.0])  # rare everywhere: filtered out
    mask = nrn.select_language_neurons(probs, top_rate=2 / 300)
    assert mask.shape == (4, 3, 100)
    assert mask.sum() == 3
    assert mask[1, 1, 7] and mask[0, 2, 3] and mask[3, 2, 3] and not mask[:, 0, 5].any()
    ov = nrn.overlap(mask)
    assert ov[0, 3] == 1 and ov[1, 1] == 1 and ov[0, 1] == 0
    with pytest.raises(PolylensError, match="top_rate"):
        nrn.select_language_neurons(probs, top_rate=0)


def test_activation_probability(llama):
    probs, counts = nrn.activation_probability(
        llama, {"en": ["The capital of France is Paris."], "zh": ["法国的首都是巴黎。", "x"]}
    )
    assert probs.shape == (llama.n_blocks, 128, 2)
    assert ((probs >= 0) & (probs <= 1)).all()
    # Direct count for one text: positive units over its non-BOS tokens.
    with recording(llama, "mlp_act.1") as rec:
        llama.logits(["The capital of France is Paris."])
    act = rec["mlp_act.1"][0][0, 1:]
    assert counts["en"] == act.shape[0]
    assert torch.allclose(probs[1, :, 0], (act > 0).float().mean(0).cpu())


def test_deactivation_zeroes_exactly_the_chosen_units(llama):
    mask = torch.zeros(llama.n_blocks, 128, dtype=torch.bool)
    mask[0, [3, 17]] = True
    mask[2, 100] = True
    prompts = ["The capital of France is", "La capitale"]
    with recording(llama, "mlp_act.*") as clean:
        llama.logits(prompts)
    with intervene(llama, nrn.deactivation_edits(mask)), recording(llama, "mlp_act.*") as edited:
        llama.logits(prompts)
    a0, b0 = clean["mlp_act.0"][0], edited["mlp_act.0"][0]
    assert (b0[..., [3, 17]] == 0).all() and (a0[..., [3, 17]] != 0).any()
    keep = torch.ones(128, dtype=torch.bool)
    keep[[3, 17]] = False
    assert torch.equal(a0[..., keep], b0[..., keep])  # block 0 is upstream of any other edit
    assert (edited["mlp_act.2"][0][..., 100] == 0).all()


def test_ablation_matrix_and_loss(llama):
    texts = {"en": ["The capital of France is Paris."], "fr": ["La capitale de la France."]}
    base = nrn.token_loss(llama, texts["en"])
    assert base > 0
    mask = torch.zeros(2, llama.n_blocks, 128, dtype=torch.bool)
    mask[0, :, :64] = True  # "en" neurons: half of every layer
    baseline, matrix = nrn.ablation_matrix(llama, mask, ["en", "fr"], texts, batch_size=1)
    assert baseline[0] == pytest.approx(base, rel=1e-5)
    assert matrix.shape == (2, 2)
    assert torch.allclose(matrix[1], baseline, rtol=1e-5)  # no "fr" neurons: nothing changes
    assert not torch.allclose(matrix[0], baseline)
