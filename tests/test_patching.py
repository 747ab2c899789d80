"""Unit tier (tiny random models) and one integration test: cross-lingual subject patching."""

import pytest
import torch
from tiny import tiny_model
from tolerance import SAME_MATH, assert_close_to_scale

from interp.analysis.factual import candidate_logprobs
from interp.analysis.patching import PatchRows, patch_plan, subject_span, swap_partners
from interp.errors import PolylensError
from interp.interventions import intervene
from interp.model.sites import layer_site, recording

PAIRS = [  # (prompt, subject)
    ("The capital of France is", "France"),
    ("法国的首都是", "法国"),
    ("Mji mkuu wa Ufaransa ni", "Ufaransa"),
    ("La capitale de la France est", "France"),
]


@pytest.fixture(scope="module", params=["gemma3_text", "llama"])
def model(request):
    return tiny_model(request.param)


def test_subject_span_comes_from_offsets(llama):
    for prompt, subject in PAIRS:
        start, end = subject_span(llama, prompt, subject)
        ids = llama.tokenize([prompt])[0]
        text = llama.tokenizer.decode(ids[start:end])
        assert subject in text and 0 < start < end <= len(ids)
        # the tokens just outside the span do not belong to the subject
        assert subject not in llama.tokenizer.decode(ids[start + 1 : end])
    # the last occurrence: few-shot prompts name other subjects first
    start, _ = subject_span(llama, "France: Paris\nFrance", "France")
    assert start > 3
    with pytest.raises(PolylensError, match="does not occur"):
        subject_span(llama, "The capital of France is", "Kenya")


def test_patching_a_prompt_into_itself_changes_nothing(model):
    prompts = [p for p, _ in PAIRS]
    ref = model.logits(prompts)
    layers = list(range(model.n_blocks))
    for variant in ("last", "prefix"):
        plan = patch_plan(model, PAIRS, PAIRS, layers=layers, variant=variant)
        for layer in layers:
            with intervene(model, {layer_site(layer): plan.edit(layer)}):
                got = model.logits(prompts, batch_size=3)
            assert_close_to_scale(got, ref, SAME_MATH)


def test_patching_writes_exactly_the_patched_positions(model):
    sources = [PAIRS[0], PAIRS[1], PAIRS[2]]
    targets = [PAIRS[3], PAIRS[2], PAIRS[0]]
    tgt_prompts = [p for p, _ in targets]
    layer = 1
    site = layer_site(layer)
    with recording(model, [site]) as clean:
        model.logits(tgt_prompts)
    for variant in ("last", "prefix"):
        plan = patch_plan(model, sources, targets, layers=[layer], variant=variant)
        edit = plan.edit(layer)
        with intervene(model, {site: edit}), recording(model, [site]) as rec:
            model.logits(tgt_prompts)
        assert edit.rows_done == len(targets)
        before, after = clean[site.name][0], rec[site.name][0]
        for row in range(len(targets)):
            changed = (after[row] - before[row]).abs().amax(-1) > 0
            written = torch.zeros_like(changed)
            written[plan.positions[row]] = True
            assert torch.equal(changed, written), (variant, row)
            assert_close_to_scale(after[row, plan.positions[row]], plan.states[row][:, 0], 0)
        if variant == "last":
            assert all(len(p) == 1 for p in plan.positions)
        else:
            assert any(len(p) > 1 for p in plan.positions)


def test_patches_follow_the_candidate_scorer_batches(llama):
    """Rows are consumed in prompt order across the scorer's prefix passes, not its tails."""
    prompts = [p for p, _ in PAIRS]
    cands = [[" Paris", " Paris na Berlin"], ["巴黎", "x"], [" Paris"], [" Paris la"]]
    ref = candidate_logprobs(llama, prompts, cands)
    plan = patch_plan(llama, PAIRS, PAIRS, layers=[1], variant="prefix")
    edit = plan.edit(1)
    with intervene(llama, {layer_site(1): edit}):
        got = candidate_logprobs(llama, prompts, cands, batch_size=3)
    assert edit.rows_done == len(prompts)
    for g, r in zip(got, ref):
        assert_close_to_scale(g, r, SAME_MATH)
    swapped = patch_plan(llama, PAIRS[::-1], PAIRS, layers=[1], variant="prefix")
    with intervene(llama, {layer_site(1): swapped.edit(1)}):
        moved = candidate_logprobs(llama, prompts, cands, batch_size=3)
    assert any((m - r).abs().max() > 1e-4 for m, r in zip(moved, ref))


def test_patch_rows_errors(llama):
    plan = patch_plan(llama, PAIRS[:1], PAIRS[:1], layers=[1])
    with pytest.raises(PolylensError, match="holds 1 rows"):
        with intervene(llama, {layer_site(1): plan.edit(1)}):
            llama.logits([PAIRS[0][0], PAIRS[1][0]])
    with pytest.raises(PolylensError, match="counted from the end"):
        PatchRows([torch.zeros(1, llama.d_model)], [[0]])
    with pytest.raises(PolylensError, match="2 sources but 1 targets"):
        patch_plan(llama, PAIRS[:2], PAIRS[:1], layers=[1])


@pytest.mark.integration
def test_gemma_patching_a_subject_moves_the_answer(gemma):
    """Germany's subject state written over France's: the capital follows at an early layer."""
    src = ("Die Hauptstadt von Deutschland ist", "Deutschland")
    tgt = ("The capital of France is", "France")
    cands = [[" Berlin", " Paris"]]
    base = candidate_logprobs(gemma, [tgt[0]], cands)[0]
    assert base[1] > base[0]
    plan = patch_plan(gemma, [src], [tgt], layers=[3], variant="last")
    with intervene(gemma, {layer_site(3): plan.edit(3)}):
        got = candidate_logprobs(gemma, [tgt[0]], cands)[0]
    assert got[0] - got[1] > base[0] - base[1]


def test_cross_lingual_patching_experiment_end_to_end(tmp_path):
    import json

    from tiny import save_tiny

    from experiments.cli import main

    tiny = save_tiny("llama", tmp_path / "tiny")
    config = tmp_path / "small.yaml"
    config.write_text("n_per_relation: 2\nlayers: [0, 2]\nn_boot: 50\n")
    argv = ["run", "cross-lingual-patching", "--model", str(tiny), "--langs", "en,zh"]
    assert main([*argv, "--out", str(tmp_path / "out"), "--config", str(config)]) == 0
    out = tmp_path / "out" / "cross-lingual-patching"
    for name in (
        "report.html",
        "tables/flip_share_per_layer.csv",
        "tables/flip_share_per_layer_pair.csv",
        "figures/flip_share_by_layer.png",
        "figures/flip_share_by_pair.html",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_cases"] == 2 * 4 * 4  # 2 targets x 4 relations x 4 ordered pairs
    assert metrics["peak_layer"] in (0, 2)
    selfpatch = metrics["controls"][0]["result"]
    assert float(selfpatch.split("margin| ")[1].split(" ")[0]) < 1e-3


def test_swap_partners_have_different_answers():
    answers = {
        "a": {"en": "Paris", "fr": "Paris"},
        "b": {"en": "Paris", "fr": "Paris"},
        "c": {"en": "Rome", "fr": "Rome"},
        "d": {"en": "Lima", "fr": "Lima"},
    }
    partners = swap_partners(answers, {k: "capital" for k in answers})
    assert partners == {"a": "c", "b": "c", "c": "d", "d": "a"}
