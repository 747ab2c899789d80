"""Unit tier: refusal directions on tiny random models (one with a planted refusal direction)."""

import csv
import html
import json

import numpy as np
import pytest
import torch
from tiny import save_tiny, tiny_model

from experiments import run_experiment
from interp import Ablate, PolylensError, directional_ablation, intervene, recording
from interp.analysis.direction_effects import (
    cosine_by_layer,
    held_out_effects,
    orthogonalization_gap,
)
from interp.analysis.directions import (
    CandidateScores,
    candidate_directions,
    diff_in_means,
    score_candidates,
    select_direction,
    spare_top_dimensions,
    top_dimension_share,
)
from interp.analysis.edit_scores import plain_logprobs, scores_under_edits, shared_prefix_length
from interp.analysis.language_id import detect_languages
from interp.analysis.refusal import (
    RefusalTemplate,
    incontext_template,
    judge,
    opener_token_ids,
    post_instruction_count,
    read_instruction_file,
    read_user_data,
    refusal_score,
)
from interp.data.refusal import DIALOGUES
from interp.metrics import auroc

HARMFUL = [
    "The capital is Paris",
    "France is Paris",
    "La capitale de la France est Paris",
    "Paris is the capital",
    "Die Hauptstadt ist Paris",
    "Mji mkuu ni Paris",
]
HARMLESS = [
    "The capital of France",
    "La capitale de la France",
    "Die Hauptstadt von Frankreich",
    "Mji mkuu wa Ufaransa",
    "The capital is big",
    "France is big",
]
TEMPLATE = RefusalTemplate("en", "User: ", "\nAssistant:", " ", ("France",), ("france",))


def planted_model():
    """A tiny Llama whose opener logit reads one residual direction u, written only by harmful
    prompts: embeddings carry u only for the token ' Paris'; block 0's attention copies the
    u-component to later positions; no other sublayer writes anything.
    """
    model = tiny_model("llama", seed=3)
    hf, d = model.hf, model.d_model
    u = torch.randn(d, generator=torch.Generator().manual_seed(7))
    u /= u.norm()
    marker = model.tokenizer(" Paris", add_special_tokens=False)["input_ids"]
    opener = opener_token_ids(model, TEMPLATE)[0]
    with torch.no_grad():
        emb = hf.model.embed_tokens.weight
        emb -= torch.outer(emb @ u, u)
        emb[marker[0]] += u
        for block in hf.model.layers:
            block.self_attn.o_proj.weight.zero_()
            block.mlp.down_proj.weight.zero_()
        attn = hf.model.layers[0].self_attn
        attn.v_proj.weight.zero_()
        attn.v_proj.weight[0] = u
        attn.o_proj.weight[:, 0] = 20 * u
        head = hf.lm_head.weight
        head -= torch.outer(head @ u, u)
        head[opener] = 2 * u
    assert len(marker) == 1
    return model, u


@pytest.fixture(scope="module")
def planted():
    return planted_model()


def test_diff_in_means_is_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    harmful, harmless = torch.randn(5, 2, 3, 4, generator=g), torch.randn(7, 2, 3, 4, generator=g)
    got = diff_in_means(harmful, harmless)
    assert got.dtype == torch.float64 and got.shape == (3, 2, 4)
    for layer in range(3):
        for pos in range(2):
            hand = [
                sum(float(harmful[i, pos, layer, k]) for i in range(5)) / 5
                - sum(float(harmless[i, pos, layer, k]) for i in range(7)) / 7
                for k in range(4)
            ]
            assert np.allclose(got[layer, pos].numpy(), hand, atol=1e-12)


def test_candidates_match_recorded_residuals(tmp_path):
    model = tiny_model("llama")
    prompts_h, prompts_n = TEMPLATE.wrap(HARMFUL), TEMPLATE.wrap(HARMLESS)
    n_post = post_instruction_count(model, prompts_h + prompts_n)
    assert model.tokenizer.decode(model.tokenize(prompts_h[:1])[0][-n_post:]) == "\nAssistant:"
    cands = candidate_directions(model, prompts_h, prompts_n, n_post, store=tmp_path)
    assert cands.shape == (model.n_layers, n_post, model.d_model)
    by_hand = []
    for prompts in (prompts_h, prompts_n):
        rows = []
        for p in prompts:  # one prompt at a time: no padding at all
            with recording(model, ["resid_pre.*", f"resid_post.{model.n_blocks - 1}"]) as rec:
                model.logits([p])
            layers = [rec[f"resid_pre.{i}"][0] for i in range(model.n_blocks)]
            layers.append(rec[f"resid_post.{model.n_blocks - 1}"][0])
            rows.append(torch.stack([x[0, -n_post:] for x in layers]).double())
        by_hand.append(torch.stack(rows).mean(0))
    assert torch.allclose(cands, by_hand[0] - by_hand[1], atol=1e-5)
    again = candidate_directions(model, prompts_h, prompts_n, n_post, store=tmp_path)
    assert torch.equal(cands, again)  # read back from the store


def test_selection_rule_on_constructed_scores():
    bypass = np.array([[np.nan, np.nan], [-1.0, -3.0], [-2.0, -0.5], [-6.0, -5.0], [-9.0, -9.0]])
    induce = np.array([[np.nan, np.nan], [1.0, -0.1], [0.5, 2.0], [1.0, 1.0], [1.0, 1.0]])
    kl = np.array([[np.nan, np.nan], [0.01, 0.01], [0.05, 0.01], [0.5, 0.05], [0.0, 0.0]])
    scores = CandidateScores(bypass, induce, kl, 0.0, 0.0)
    sel = select_direction(scores, n_blocks=4)  # layers >= int(4 * 0.8) = 3 are late
    # (1,1) has induce <= 0, (3,*) and (4,*) are late: best kept is (2,0) with bypass -2.
    assert (sel.layer, sel.pos, sel.relaxed) == (2, 0, False)
    assert sel.reasons[1, 1] == "induce <= 0" and sel.reasons[3, 0] == "late layer"
    assert sel.reasons[0, 0] == "not scored" and sel.reasons[2, 0] == "selected"
    wider = select_direction(scores, n_blocks=5)  # layer 3 kept; (3,0) has KL 0.5: (3,1) wins
    assert (wider.layer, wider.pos) == (3, 1) and wider.reasons[3, 0] == "kl > 0.1"
    assert select_direction(scores, n_blocks=5, kl_max=1.0).pos == 0
    strict = select_direction(scores, n_blocks=4, kl_max=1e-9)
    assert strict.relaxed and (strict.layer, strict.pos) == (1, 1)
    with pytest.raises(PolylensError, match="no candidate direction can be selected"):
        select_direction(scores, n_blocks=1)


def test_refusal_score_judge_and_auroc():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [5.0, 0.0, 0.0, 0.0]])
    score = refusal_score(logits, [0])
    assert torch.allclose(score[0], torch.log(torch.tensor(1 / 3)))
    p = torch.softmax(logits[1], -1)[0]
    assert torch.allclose(score[1], torch.log(p / (1 - p)))
    assert judge(["I cannot do that.", "Sure! Here", "Lo siento"], DIALOGUES["es"].phrases) == [
        False,
        False,
        True,
    ]
    assert judge(["I'm sorry, no."], DIALOGUES["en"].phrases) == [True]
    assert auroc([3, 2], [1, 0]) == 1.0 and auroc([1], [1]) == 0.5 and auroc([0], [1]) == 0.0


def test_every_dialogue_builds_and_opens_with_real_tokens():
    model = tiny_model("llama")
    for lang in DIALOGUES:
        t = incontext_template(lang)
        prompts = t.wrap(["one", "two things"])
        assert post_instruction_count(model, prompts) >= 1
        assert opener_token_ids(model, t)
        assert prompts[0].count(f"\n{DIALOGUES[lang].assistant}") == 5


def test_batched_scores_equal_one_candidate_per_pass(planted):
    model, u = planted
    cands = torch.randn(5, model.d_model, generator=torch.Generator().manual_seed(2))
    cands[0] = u
    prompts = TEMPLATE.wrap(HARMFUL[:3] + HARMLESS[:3])
    ids = opener_token_ids(model, TEMPLATE)
    ref = plain_logprobs(model, prompts[3:])
    kw = dict(ablate=cands, reference=ref)
    stacked, kl_s = scores_under_edits(model, prompts, ids, rows_per_pass=64, **kw)
    single, kl_1 = scores_under_edits(model, prompts, ids, rows_per_pass=1, **kw)
    assert torch.allclose(stacked, single, atol=1e-4) and torch.allclose(kl_s, kl_1, atol=1e-5)
    layers = [0, 1, 2, 3, 1]
    add_s, _ = scores_under_edits(model, prompts, ids, add=cands, add_layers=layers)
    add_1, _ = scores_under_edits(
        model, prompts, ids, add=cands, add_layers=layers, rows_per_pass=1
    )
    assert torch.allclose(add_s, add_1, atol=1e-4)
    # The KL by hand, one candidate at a time: KL(plain || ablated) of each harmless prompt's
    # next-token distribution, from a plain forward pass under the hooks of directional_ablation.
    # Row 0 (u, which no harmless prompt carries) moves nothing; the random rows move a lot.
    for c in range(len(cands)):
        with intervene(model, directional_ablation(cands[c])):
            edited = model.logits(prompts[3:]).log_softmax(-1)
        hand = (ref.exp() * (ref - edited)).sum(-1)
        assert torch.allclose(kl_s[c], hand, rtol=1e-4, atol=1e-5), c
        assert (float(hand.max()) < 1e-5) if c == 0 else (float(hand.max()) > 1e-2), c
    # Row 0 ablates u itself: no residual keeps a component along it.
    with intervene(model, directional_ablation(u)):
        with recording(model, "resid_post.*") as rec:
            model.logits(prompts)
    for tensors in rec.values():
        x = tensors[0]
        assert float((x @ u).abs().max() / x.norm(dim=-1).max()) <= 1e-5


def test_top_dimension_share_on_a_constructed_stream():
    resid = torch.zeros(4, 6)
    resid[:, 2], resid[:, 5], resid[:, 0] = 100.0, 50.0, 1.0  # massive dims 2 and 5
    direction = torch.tensor([0.0, 1.0, 3.0, 0.0, 0.0, 0.0])
    on_top, power = top_dimension_share(direction, resid, k=2)
    assert on_top == pytest.approx(9 / 10) and power == pytest.approx(12500 / 12501)


def test_spare_top_dimensions_zeroes_each_cells_largest_dimensions():
    resid = torch.zeros(3, 2, 2, 5)  # [prompt pos layer d]
    resid[..., 1] = 10.0
    resid[:, 0, 1, 4] = 20.0  # at layer 1, position 0, dimension 4 is the largest
    cands = torch.arange(1.0, 21.0).view(2, 2, 5)  # [layer pos d]
    spared = spare_top_dimensions(cands, resid, k=1)
    zeroed = spared == 0
    assert zeroed[1, 0, 4] and zeroed.sum() == 4 and zeroed[0, :, 1].all() and zeroed[1, 1, 1]
    assert torch.equal(spared[~zeroed], cands[~zeroed])
    assert spare_top_dimensions(cands, resid, k=0) is cands
    with pytest.raises(PolylensError, match="lower spare_top_dims"):
        spare_top_dimensions(cands, resid, k=5)


def test_ablating_a_spared_direction_leaves_the_largest_dimensions_alone():
    model = tiny_model("llama")
    prompt = TEMPLATE.wrap(HARMLESS[:1])
    with recording(model, "resid_pre.1") as rec:
        model.logits(prompt)
    plain = rec["resid_pre.1"][0][0]
    top = plain.pow(2).mean(0).topk(2).indices
    direction = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0))
    spared = spare_top_dimensions(direction[None, None], plain[:, None, None], k=2)[0, 0]
    for d, moved in ((direction, True), (spared, False)):
        with intervene(model, {"resid_pre.1": Ablate(d)}), recording(model, "resid_pre.1") as rec:
            model.logits(prompt)
        edited = rec["resid_pre.1"][0][0]
        assert not torch.allclose(edited, plain, atol=1e-3)  # the edit was applied
        assert torch.allclose(edited[:, top], plain[:, top], atol=1e-6) is not moved


def test_shared_prefix_length_counts_tokens_and_leaves_one_of_each():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2  # each keeps a token
    assert shared_prefix_length([[7, 1], [8, 1]]) == 0


@pytest.mark.parametrize("arch", ["gemma3_text", "llama", "gpt2"])
def test_prefix_reuse_gives_the_full_prompt_scores(arch):
    """Keys and values of the shared dialogue, reused, give the numbers of full prompts."""
    model = tiny_model(arch, seed=1)
    dialogue = RefusalTemplate(
        "en",
        "User: The capital of France is Paris.\nAssistant: Paris.\n\nUser: ",
        "\nAssistant:",
        " ",
        ("France",),
        ("france",),
    )
    prompts = dialogue.wrap(HARMFUL[:3] + HARMLESS[:3])
    assert shared_prefix_length(model.tokenize(prompts)) >= 8
    ids = opener_token_ids(model, dialogue)
    cands = torch.randn(3, model.d_model, generator=torch.Generator().manual_seed(5))
    ref = plain_logprobs(model, prompts[3:])
    for kw in (
        dict(ablate=cands, reference=ref),
        dict(add=cands, add_layers=[1, 2, 3], coeff=4.0),
        {},
    ):
        full, kl_full = scores_under_edits(model, prompts, ids, reuse_prefix=False, **kw)
        for rows in (64, 6, 1):
            reused, kl = scores_under_edits(model, prompts, ids, rows_per_pass=rows, **kw)
            assert torch.allclose(reused, full, atol=1e-4), (arch, kw.keys(), rows)
            if kl_full is not None:
                assert torch.allclose(kl, kl_full, atol=1e-5)
    plain = scores_under_edits(model, prompts, ids)[0]
    edited = scores_under_edits(model, prompts, ids, ablate=cands)[0]
    assert (plain - edited).abs().max() > 1e-3  # the edits act on the reused prefix


def test_planted_direction_is_found_and_ablation_drops_the_score(planted):
    model, u = planted
    ids = opener_token_ids(model, TEMPLATE)
    h, n = TEMPLATE.wrap(HARMFUL), TEMPLATE.wrap(HARMLESS)
    n_post = post_instruction_count(model, h + n)
    cands = candidate_directions(model, h[:4], n[:4], n_post)
    scores = score_candidates(model, cands, h[4:], n[4:], ids)
    assert scores.baseline_harmful > 0 > scores.baseline_harmless
    sel = select_direction(scores, model.n_blocks)
    assert not sel.relaxed and sel.layer == 1  # layer 0 is the same tokens: no direction
    direction = cands[sel.layer, sel.pos].float()
    assert float(torch.nn.functional.cosine_similarity(direction, u, dim=0)) > 0.99
    before, _ = scores_under_edits(model, h, ids)
    after, _ = scores_under_edits(model, h, ids, ablate=direction[None])
    assert float(after.mean()) < float(before.mean()) - 3
    assert auroc(before[0], scores_under_edits(model, n, ids)[0][0]) == 1.0
    # the score judge's rates in the held-out summary: share of scores above 0, every prompt
    summary, _ = held_out_effects(
        model, TEMPLATE, direction, sel.layer, HARMFUL, HARMLESS, ids, n_generate=0
    )
    assert summary["score_refusal_harmful"] == float((before[0] > 0).float().mean()) == 1.0
    assert summary["score_refusal_harmful+ablation"] == float((after[0] > 0).float().mean())
    assert summary["score_refusal_harmful+ablation"] < 1.0


def test_orthogonalization_gap_and_cosines():
    model = tiny_model("llama")
    d = torch.randn(model.d_model, generator=torch.Generator().manual_seed(4))
    assert orthogonalization_gap(model, d, TEMPLATE.wrap(HARMFUL[:2])) <= 1e-4
    assert orthogonalization_gap(tiny_model("gemma3_text"), torch.randn(64), ["x y"]) is None
    dirs = torch.randn(3, 4, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    cos = cosine_by_layer(dirs)
    assert cos.shape == (4, 3, 3)
    assert torch.allclose(
        torch.diagonal(cos, dim1=1, dim2=2), torch.ones(4, 3, dtype=torch.float64)
    )
    for layer in range(4):  # by hand, every pair of languages
        for i in range(3):
            for j in range(3):
                a, b = dirs[i, layer].tolist(), dirs[j, layer].tolist()
                dot = sum(x * y for x, y in zip(a, b))
                norms = sum(x * x for x in a) ** 0.5 * sum(y * y for y in b) ** 0.5
                assert float(cos[layer, i, j]) == pytest.approx(dot / norms, abs=1e-12)
    assert float(cos.min()) < 0  # some pairs point apart: a sign error would show


def _write_user_data(directory, langs, n=8):
    directory.mkdir(exist_ok=True)
    for lang in langs:
        for kind, base in (("harmful", HARMFUL), ("harmless", HARMLESS)):
            items = [
                {"instruction": f"{base[i % len(base)]} {i}", "category": "x"} for i in range(n)
            ]
            (directory / f"{kind}_{lang}.json").write_text(json.dumps(items), encoding="utf-8")
    return directory


def test_user_data_loading_and_its_errors(tmp_path):
    data = _write_user_data(tmp_path / "d", ["en", "fr"])
    loaded = read_user_data(data, ["en", "fr"], need=5)
    assert len(loaded["fr"][0]) == 8 and loaded["en"][1][0] == "The capital of France 0"
    with pytest.raises(PolylensError, match="has no file harmful_de.json for language 'de'"):
        read_user_data(data, ["de"], need=5)
    with pytest.raises(PolylensError, match="has 8 instructions; the splits need at least 20"):
        read_user_data(data, ["en"], need=20)
    with pytest.raises(PolylensError, match="data directory .* does not exist"):
        read_user_data(tmp_path / "nope", ["en"], need=1)
    bad = tmp_path / "bad.json"
    for text, message in (
        ("{not json", "is not valid JSON"),
        ('{"instruction": "x"}', "holds a dict, not a JSON list"),
        ('[{"instruction": "ok"}, {"prompt": "x"}]', "item 1 has no text 'instruction'"),
        ('[{"instruction": "  "}]', "item 0 has no text 'instruction'"),
    ):
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(PolylensError, match=message) as info:
            read_instruction_file(bad)
        assert "\n" not in str(info.value)


def test_experiment_end_to_end_on_a_tiny_model(tmp_path):
    model_dir = str(save_tiny("llama", tmp_path / "tiny"))
    data = _write_user_data(tmp_path / "data", ["en", "fr"], n=10)
    overrides = {
        "model": model_dir,
        "langs": "en,fr",
        "data": str(data),
        "n_val": 3,
        "n_test": 3,
        "n_generate": 2,
        "max_new_tokens": 4,
        "rows_per_pass": 16,
        "spare_top_dims": 3,
        "store": str(tmp_path / "store"),
        "out": str(tmp_path / "out"),
    }
    out = run_experiment("refusal-direction", None, overrides)
    for name in (
        "metrics.json",
        "report.html",
        "tables/candidate_scores.csv",
        "tables/effects.csv",
        "tables/examples.csv",
        "tables/transfer_grid.csv",
        "tables/cosine_by_layer.csv",
        "figures/candidates_bypass_en.png",
        "figures/candidates_kl_fr.html",
        "figures/cosine_by_layer.html",
        "figures/transfer_ablation_share.png",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["per_language"]) == {"en", "fr"}
    page = (out / "report.html").read_text()
    examples = list(csv.DictReader((out / "tables/examples.csv").open()))
    first = {}
    for e in examples:
        first.setdefault((e["lang"], e["condition"]), e["answer"])
    assert "Example generations" in page and len(first) == 8
    assert all(html.escape(answer) in page for answer in first.values())
    assert page.count("<td>harmless+addition</td>") == 2  # one example per language
    found = detect_languages([e["answer"] for e in examples])  # None is a blank CSV cell
    assert [e["answer_language"] for e in examples] == [code or "" for code in found]
    assert "<th>answer language</th>" in page
    en = metrics["per_language"]["en"]
    assert 0 <= en["auroc_before"] <= 1 and en["sizes"]["harmful_test"] == 3
    assert metrics["orthogonalization"] == "checked"
    # The KL numbers against the candidate table: the lowest KL of every scored candidate, the
    # selected candidate's KL; and a random direction's ablation does move the distribution.
    table = list(csv.DictReader((out / "tables/candidate_scores.csv").open()))
    for lang, values in metrics["per_language"].items():
        mine = [r for r in table if r["lang"] == lang]
        scored = [float(r["kl"]) for r in mine if r["kl"] != "nan"]
        (selected,) = [r for r in mine if r["status"] == "selected"]
        assert values["val_kl_min_candidate"] == pytest.approx(min(scored)), lang
        assert values["val_kl"] == pytest.approx(float(selected["kl"])), lang
        assert values["selected_layer"] == int(selected["layer"])
        assert values["val_kl_random_directions"] > 0
    assert "random directions" in metrics["controls"][0]["result"]
    assert en["direction_share_on_top3_residual_dims"] == 0  # spare_top_dims: 3
    assert metrics["orthogonalization_max_logprob_gap"] <= 1e-4
    assert -1 <= metrics["cosine_min_at_layer"] <= metrics["cosine_max_at_layer"] <= 1
    grid = list(csv.DictReader((out / "tables/transfer_grid.csv").open()))
    drop = {(r["source"], r["target"]): float(r["ablation_drop"]) for r in grid}
    ratio = (drop["en", "fr"] + drop["fr", "en"]) / (drop["en", "en"] + drop["fr", "fr"])
    assert metrics["transfer_drop_ratio_offdiag_to_own"] == pytest.approx(ratio)
    shares = sorted(float(r["ablation_share"]) for r in grid if r["source"] != r["target"])
    assert metrics["transfer_share_median_offdiag"] == pytest.approx(sum(shares) / 2)
    rows = (out / "tables/candidate_scores.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 4 * en["n_post_instruction_tokens"]  # every candidate, 2 langs
    assert sum("selected" in r for r in rows) == 2
    with pytest.raises(PolylensError, match="has no file harmful_de.json"):
        run_experiment("refusal-direction", None, {**overrides, "langs": "de"})


def test_bench_refusal_report(tmp_path):
    from interp.bench import bench_refusal

    result = bench_refusal(
        str(save_tiny("llama", tmp_path / "m")), n_train=4, n_val=2, rows_per_pass=64
    )
    assert set(result["median_s"]) == {"batched", "one_per_pass"}
    assert result["same_selection"] and result["max_score_gap"] <= 1e-3
    # 4 layers x positions, but layer 0 (the same template tokens) has no direction.
    assert result["n_candidates"] == 3 * result["n_post_instruction_positions"]


def test_shipped_configs_resolve():
    from experiments.base import CONFIG_DIR, load_config
    from experiments.refusal_direction import RefusalConfig

    default = load_config(RefusalConfig, "refusal-direction", None, {})
    assert default.model == "gemma-3-270m" and default.template == "incontext"
    smol = load_config(
        RefusalConfig, "refusal-direction", CONFIG_DIR / "refusal-direction-smollm2.yaml", {}
    )
    assert smol.model == "smollm2-135m-instruct" and smol.template == "chat"
    qwen = load_config(
        RefusalConfig, "refusal-direction", CONFIG_DIR / "refusal-direction-qwen.yaml", {}
    )
    assert qwen.model == "Qwen/Qwen2.5-1.5B-Instruct" and qwen.template == "chat"
    assert qwen.langs == default.langs and qwen.layer_stride == 1
    testbed = load_config(
        RefusalConfig, "refusal-direction", CONFIG_DIR / "refusal-direction-testbed.yaml", {}
    )
    assert testbed.model == "gemma-3-270m-refusal-en" and testbed.template == "chat"
    assert testbed.langs == default.langs and testbed.n_generate == testbed.n_test
    quick = load_config(
        RefusalConfig, "refusal-direction", CONFIG_DIR / "report" / "refusal-direction.yaml", {}
    )
    assert quick.model == "gemma-3-270m" and quick.langs == ["en", "de"]
    assert quick.n_train < default.n_train and quick.layer_stride > 1
    with pytest.raises(PolylensError, match="template"):
        load_config(RefusalConfig, "refusal-direction", None, {"template": "magic"})
