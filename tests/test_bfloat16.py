"""Unit tier: the float32 equalities in bfloat16 (the lens in float16 too), and every experiment.

Each comparison mirrors a float32 test (test_lens, test_extract, test_interventions,
test_patching) on a tiny random model loaded in half precision, within a budget of
``tests/tolerance.py`` that says why it is what it is; each also checks that the bug it guards
against would move things far beyond that budget.
"""

import json
import math

import pytest
import torch
import yaml
from tiny import PROMPTS, save_tiny
from tolerance import (
    BF16_DEEP_FORWARD,
    BF16_NO_COMPONENT,
    BF16_OTHER_IMPLEMENTATION,
    BF16_SAME_MATH,
    EPS_BF16,
    F16_SAME_MATH,
    assert_close_to_scale,
    max_relative_error,
)

import interp
from experiments import run_experiment
from interp.analysis.patching import patch_plan
from interp.interventions import (
    Ablate,
    ForwardState,
    directional_ablation,
    intervene,
    orthogonalize,
)
from interp.lens import apply_lens
from interp.lens.logit import finish_logits
from interp.model.dtypes import DTYPES
from interp.model.sites import layer_site


@pytest.fixture(scope="module")
def load(tmp_path_factory):
    """``load(arch, dtype)``: one random checkpoint per architecture, loaded in ``dtype``."""
    dirs, models = {}, {}

    def get(arch: str, dtype: str = "bfloat16"):
        if arch not in dirs:
            dirs[arch] = save_tiny(arch, tmp_path_factory.mktemp(f"tiny-{arch}"))
        if (arch, dtype) not in models:
            model = interp.load_model(str(dirs[arch]), dtype=dtype)
            assert model.dtype == DTYPES[dtype] and model.identity["dtype"] == dtype
            models[arch, dtype] = model
        return models[arch, dtype]

    return get


def strong_direction(model):
    """A unit direction the residual carries strongly (its mean at layer 1), like a refusal one."""
    plain = interp.extract(model, PROMPTS, positions="all", progress=False).flat
    d = plain[:, 1].mean(0)
    return d / d.norm()


def component(x, d):
    """Largest share of a residual's norm along the unit direction ``d``, over rows and layers."""
    x = x.double()
    return float(((x @ d.double()).abs() / x.norm(dim=-1).clamp_min(1e-30)).max())


# -- the lens at the last layer is the model --------------------------------------------------
@pytest.mark.parametrize(
    ("dtype", "budget"),
    [("bfloat16", BF16_SAME_MATH), ("float16", F16_SAME_MATH)],
    ids=["bfloat16", "float16"],
)
@pytest.mark.parametrize("arch", ["gemma3_text", "llama", "gpt2"])
def test_last_layer_reproduces_model_logprobs(load, arch, dtype, budget):
    model = load(arch, dtype)
    acts = interp.extract(model, PROMPTS, progress=False)
    assert acts.meta["model"]["dtype"] == dtype
    out = apply_lens(model, acts, top_k=model.unembed.weight.shape[0])
    expected = torch.log_softmax(model.logits(PROMPTS), dim=-1).cpu()
    full = torch.full_like(expected, -math.inf).scatter(
        1, out.top_ids[:, -1], out.top_logprobs[:, -1]
    )
    assert_close_to_scale(full, expected, budget)
    entropy = -(expected.exp() * expected).sum(-1)
    assert_close_to_scale(out.entropy[:, -1], entropy, budget)
    # The budget is far below a real bug: decoding without the final norm.
    raw = finish_logits(model, model.unembed(acts.tensor[:, -1].to(model.device, model.dtype)))
    assert max_relative_error(torch.log_softmax(raw, dim=-1).cpu(), expected) > 4 * budget


# -- the three extraction backends agree --------------------------------------------------------
@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
@pytest.mark.parametrize("arch", ["gemma3_text", "llama", "gpt2"])
def test_backends_agree_with_hooks(load, arch, backend):
    model = load(arch)
    logits_before = model.logits(PROMPTS)
    hooks = interp.extract(model, PROMPTS, positions="all", progress=False)
    other = interp.extract(model, PROMPTS, positions="all", backend=backend, progress=False)
    assert_close_to_scale(other.flat, hooks.flat, BF16_OTHER_IMPLEMENTATION)
    assert torch.equal(model.logits(PROMPTS), logits_before)  # the user's model is untouched


# -- directional ablation removes the direction ------------------------------------------------
def test_ablate_rounds_once():
    """A bfloat16 site mostly along ``d`` keeps at most one rounding of what is left."""
    gen = torch.Generator().manual_seed(0)
    d = torch.randn(64, generator=gen)
    d /= d.norm()
    x = (100 * d + torch.randn(2, 5, 64, generator=gen)).bfloat16()
    y = Ablate(d)(x, ForwardState())
    assert y.dtype == torch.bfloat16
    # Rounding the float32 result moves each entry by <= EPS_BF16 / 2 of it: so much of the norm
    # at most along d. Rounded bfloat16 steps would leave ~3 of those of (x . d) = 100.
    assert component(y, d) <= EPS_BF16 / 2


@pytest.mark.parametrize("arch", ["gemma3_text", "llama", "gpt2"])
def test_directional_ablation_removes_the_direction_everywhere(load, arch):
    model = load(arch)
    d = strong_direction(model)
    with intervene(model, directional_ablation(d)):
        acts = interp.extract(model, PROMPTS, positions="all", progress=False)
    assert component(acts.flat, d) <= BF16_NO_COMPONENT
    plain = interp.extract(model, PROMPTS, positions="all", progress=False).flat
    assert component(plain, d) > 16 * BF16_NO_COMPONENT  # it was there, far above the budget


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_orthogonalize_equals_hook_ablation(load, arch):
    model = load(arch)
    d = strong_direction(model)
    with intervene(model, directional_ablation(d)):
        hooked_logits = model.logits(PROMPTS)
    ortho = orthogonalize(model, d)
    assert ortho.dtype == torch.bfloat16
    assert_close_to_scale(ortho.logits(PROMPTS), hooked_logits, BF16_OTHER_IMPLEMENTATION)
    # the original is kept, and differs far beyond the budget
    assert max_relative_error(model.logits(PROMPTS), hooked_logits) > 4 * BF16_OTHER_IMPLEMENTATION


# -- patching a run into itself changes nothing ------------------------------------------------
PAIRS = [  # (prompt, subject), as in test_patching
    ("The capital of France is", "France"),
    ("法国的首都是", "法国"),
    ("Mji mkuu wa Ufaransa ni", "Ufaransa"),
    ("La capitale de la France est", "France"),
]


@pytest.mark.parametrize("arch", ["gemma3_text", "llama"])
def test_patching_a_prompt_into_itself_changes_nothing(load, arch):
    model = load(arch)
    prompts = [p for p, _ in PAIRS]
    ref = model.logits(prompts)
    layers = list(range(model.n_blocks))
    for variant in ("last", "prefix"):
        plan = patch_plan(model, PAIRS, PAIRS, layers=layers, variant=variant)
        for layer in layers:
            with intervene(model, {layer_site(layer): plan.edit(layer)}):
                got = model.logits(prompts, batch_size=3)
            assert_close_to_scale(got, ref, BF16_DEEP_FORWARD)
    # Another prompt's states patched in move the logits far beyond the budget.
    plan = patch_plan(model, PAIRS[1:] + PAIRS[:1], PAIRS, layers=[0], variant="prefix")
    with intervene(model, {layer_site(0): plan.edit(0)}):
        got = model.logits(prompts, batch_size=3)
    assert max_relative_error(got, ref) > 4 * BF16_DEEP_FORWARD


# -- every experiment runs in bfloat16 ---------------------------------------------------------
CHAT = "{% for m in messages %}User: {{ m['content'] }}\nAssistant:{% endfor %}"
"""A short chat template for the tiny tokenizer: refusal prompts in it are a few dozen tokens."""

EXPERIMENTS = {  # name: (architecture, the smallest config that exercises every stage)
    "latent-language": ("gemma3_text", {"langs": "en,fr", "n_words": 5, "n_demos": 1}),
    "translation-barrier": ("gemma3_text", {"langs": "en,fr", "n_words": 5, "n_demos": 1}),
    "knowledge-boundary": (
        "gemma3_text",
        {"langs": "en,fr", "labels": "construction", "n_per_class": 4, "folds": 2}
        | {"control_shuffles": 1},
    ),
    "mid-layer-alignment": ("gemma3_text", {"langs": "en,fr", "n_sentences": 4, "k": 1}),
    "embedding-geometry": (
        "gemma3_text",
        {"min_tokens": 3, "probe_tokens": 10, "neighbour_queries": 2, "neighbours": 3},
    ),
    "language-neurons": (
        "gemma3_text",
        {"langs": "en,fr", "n_train_sentences": 3, "n_eval_sentences": 1, "top_rate": 0.05},
    ),
    "cross-lingual-patching": (
        "llama",
        {"langs": "en,zh", "relations": ["capital", "currency"], "n_per_relation": 2}
        | {"layers": [1], "variants": ["last"]},
    ),
    "factual-consistency": (
        "gemma3_text",
        {"langs": "en,fr", "relations": ["capital", "currency"], "n_per_relation": 2}
        | {"max_candidates": 2, "n_demos": 0, "max_new_tokens": 1},
    ),
    "linear-shortcut": (
        "gemma3_text",
        {"langs": "en,fr", "relations": ["capital"], "n_per_relation": 2}
        | {"n_train_per_relation": 2, "max_candidates": 2, "n_demos": 0, "n_verify": 1}
        | {"jacobian_layers": [1], "jacobian_prompts": 1},
    ),
    "language-steering": (
        "llama",
        {"langs": "en,fr,zh", "sources": ["en"], "targets": ["fr"], "n_prompts": 2}
        | {"layers": [2], "coeffs": [4.0], "neuron_coeffs": [1.0], "n_parallel": 3}
        | {"max_new_tokens": 2, "top_rate": 0.05},
    ),
    "refusal-direction": (
        "llama",
        {"langs": "en,fr", "template": "chat", "n_train": 2, "n_val": 1, "n_test": 1}
        | {"n_generate": 1, "max_new_tokens": 1},
    ),
}
_RESAMPLES = ("bootstrap", "n_boot")  # bootstrap resamples: a few are enough to run the code


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """The tiny checkpoints the experiments read; llama's tokenizer has a chat template."""
    from transformers import AutoTokenizer

    dirs = {a: save_tiny(a, tmp_path_factory.mktemp(f"run-{a}")) for a in ("gemma3_text", "llama")}
    tokenizer = AutoTokenizer.from_pretrained(dirs["llama"])
    tokenizer.chat_template = CHAT
    tokenizer.save_pretrained(dirs["llama"])
    return dirs


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_in_bfloat16(model_dirs, tmp_path, name):
    from experiments import get_experiment

    arch, overrides = EXPERIMENTS[name]
    known = {f for f in get_experiment(name).config_class.__dataclass_fields__}
    overrides = overrides | {k: 10 for k in _RESAMPLES if k in known}
    path = run_experiment(
        name,
        None,
        overrides
        | {"model": str(model_dirs[arch]), "dtype": "bfloat16", "out": str(tmp_path / "out")},
    )
    assert yaml.safe_load((path / "config.yaml").read_text())["dtype"] == "bfloat16"
    provenance = json.loads((path / "metrics.json").read_text())["provenance"]
    assert provenance["model"]["dtype"] == "bfloat16"
    assert provenance["model"]["name"] == model_dirs[arch].name
    assert (path / "report.html").is_file()
