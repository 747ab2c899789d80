"""Benchmarks of polylens against plain baselines: medians over interleaved repeats, as ratios.

How they measure is ``interp.timing``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from interp.extract import extract
from interp.model.dtypes import dtype_name
from interp.model.models import LoadedModel, load_model
from interp.timing import interleaved, megabytes


def bench_model(
    model: LoadedModel | str, device: str | None, dtype: str | None = None
) -> LoadedModel:
    """A benchmark's model: a loaded one as given (e.g. a random-init model of a real config)."""
    return model if isinstance(model, LoadedModel) else load_model(model, device, dtype)


def mixed_language_prompts(n: int) -> list[str]:
    """``n`` sentences of the bundled parallel corpus, cycling through its languages."""
    from interp.data import load

    records = load("parallel")
    by_lang: dict[str, list[str]] = {}
    for r in records:
        by_lang.setdefault(r.lang, []).append(r.text)
    langs = sorted(by_lang)
    return [
        by_lang[langs[i % len(langs)]][i // len(langs) % len(by_lang[langs[0]])] for i in range(n)
    ]


def _bare_forward(model: LoadedModel, prompts: list[str], batch_size: int) -> None:
    # The body alone (no unembedding), longest first, as extraction batches its prompts.
    with torch.inference_mode():
        for _ in model.forward_batches(
            prompts, batch_size=batch_size, longest_first=True, body_only=True, use_cache=False
        ):
            pass


def bench_extract(
    spec: LoadedModel | str = "gemma-3-270m",
    *,
    n_prompts: int = 256,
    repeats: int = 5,
    batch_size: int = 32,
    device: str | None = None,
    dtype: str = "float32",
) -> dict:
    """Time (a) a bare body forward, (b) polylens hooks, (c) TransformerLens, (d) nnsight.

    All layers, last position, the model's weights in ``dtype``. Methods are interleaved within
    each repeat so machine noise hits them alike; medians and ratios b/a, c/b, d/b are reported
    with each method's peak RSS and, on a GPU, peak CUDA memory.
    """
    model = bench_model(spec, device, dtype)
    prompts = mixed_language_prompts(n_prompts)

    def via(backend: str) -> Callable[[], None]:
        return lambda: extract(
            model, prompts, backend=backend, batch_size=batch_size, progress=False
        )

    methods = {
        "a_bare_forward": lambda: _bare_forward(model, prompts, batch_size),
        "b_polylens_hooks": via("hooks"),
        "c_transformer_lens": via("transformer_lens"),
        "d_nnsight": via("nnsight"),
    }
    for run in methods.values():  # warm-up: lazy backend set-up is not timed
        run()
    timings = interleaved(methods, repeats, cuda=model.device.type == "cuda")
    times, peaks, growth = timings.times, timings.peak_rss, timings.rss_growth
    med = timings.median
    return {
        "model": model.name,
        "device": str(model.device),
        "dtype": dtype_name(model.dtype),
        "n_prompts": n_prompts,
        "layers": model.n_layers,
        "positions": "last",
        "batch_size": batch_size,
        "repeats": repeats,
        "median_s": med,
        "all_s": times,
        "peak_rss_mb": megabytes(peaks),
        "rss_growth_mb": megabytes(growth),
        "cuda_peak_mb": megabytes(timings.cuda_peak),
        "ratios": {
            "b/a": med["b_polylens_hooks"] / med["a_bare_forward"],
            "c/b": med["c_transformer_lens"] / med["b_polylens_hooks"],
            "d/b": med["d_nnsight"] / med["b_polylens_hooks"],
        },
    }


def bench_lens(
    spec: LoadedModel | str = "gemma-3-270m",
    *,
    n_prompts: int = 256,
    repeats: int = 3,
    device: str | None = None,
) -> dict:
    """Logit lens over all layers at the last position: polylens vs TransformerLens's route.

    polylens decodes cached activations in memory-bounded chunks and keeps the top-5 tokens. The
    TransformerLens route (``run_with_cache``, ``accumulated_resid(apply_ln=True)``, unembedding)
    materialises every layer's logits for all prompts, then takes the same top-5.
    Extraction is not timed for polylens (it reads cached activations), as in an analysis.
    """
    from interp.lens.logit import apply_lens
    from interp.model.backends import _tl_bridge

    model = bench_model(spec, device)
    prompts = mixed_language_prompts(n_prompts)
    acts = extract(model, prompts, progress=False)
    bridge = _tl_bridge(model)
    batch_size = 32

    def polylens() -> None:
        apply_lens(model, acts, top_k=5, with_entropy=False)

    def transformer_lens() -> None:
        logits = []
        with torch.inference_mode():
            for _, batch in model.padded_batches(prompts, batch_size=batch_size):
                _, cache = bridge.run_with_cache(
                    batch["input_ids"],
                    attention_mask=batch["attention_mask"],
                    position_ids=batch["position_ids"],
                    names_filter=lambda n: "resid" in n or "ln_final" in n or "norm" in n,
                )
                resid = cache.accumulated_resid(apply_ln=True, pos_slice=-1)
                logits.append(bridge.unembed(resid))
            logp = torch.log_softmax(torch.cat(logits, dim=1).float(), dim=-1)
            logp.topk(5, dim=-1)

    methods = {"polylens": polylens, "transformer_lens": transformer_lens}
    timings = interleaved(methods, repeats, cuda=model.device.type == "cuda")
    times, growth = timings.times, timings.rss_growth
    memory = timings.cuda_peak if model.device.type == "cuda" else growth
    med = timings.median
    return {
        "model": model.name,
        "device": str(model.device),
        "n_prompts": n_prompts,
        "layers": model.n_layers,
        "vocab": int(model.unembed.weight.shape[0]),
        "repeats": repeats,
        "median_s": med,
        "all_s": times,
        "rss_growth_mb": megabytes(growth),
        "cuda_peak_mb": megabytes(timings.cuda_peak),
        "ratios": {
            "time polylens/transformer_lens": med["polylens"] / med["transformer_lens"],
            # On a GPU the memory that matters is the device's; RSS says nothing there.
            "memory polylens/transformer_lens": memory["polylens"]
            / max(1, memory["transformer_lens"]),
        },
    }


def bench_interventions(
    spec: LoadedModel | str = "gemma-3-270m",
    *,
    n_prompts: int = 256,
    repeats: int = 5,
    batch_size: int = 32,
    device: str | None = None,
) -> dict:
    """Plain forward vs the same forward under a directional ablation at every site.

    ``Ablate`` of a random unit direction at every ``resid_pre``, ``attn_out`` and ``mlp_out``
    (3 x n_blocks hooks): what refusal-direction ablation costs. Medians of interleaved repeats.
    """
    from interp.interventions import directional_ablation, intervene

    model = bench_model(spec, device)
    prompts = mixed_language_prompts(n_prompts)
    direction = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0))

    def ablated() -> None:
        with intervene(model, directional_ablation(direction)):
            _bare_forward(model, prompts, batch_size)

    methods = {"plain": lambda: _bare_forward(model, prompts, batch_size), "ablated": ablated}
    for run in methods.values():
        run()
    timings = interleaved(methods, repeats, cuda=model.device.type == "cuda")
    med = timings.median
    return {
        "model": model.name,
        "device": str(model.device),
        "n_prompts": n_prompts,
        "batch_size": batch_size,
        "hooks": 3 * model.n_blocks,
        "repeats": repeats,
        "median_s": med,
        "all_s": timings.times,
        "cuda_peak_mb": megabytes(timings.cuda_peak),
        "ratio ablated/plain": med["ablated"] / med["plain"],
    }


def bench_similarity(
    features: torch.Tensor | None = None,
    *,
    n_langs: int = 12,
    n_layers: int = 19,
    n_items: int = 152,
    d_model: int = 640,
    repeats: int = 3,
    device: str | None = None,
    seed: int = 0,
    max_components: int | None = 20,
) -> dict:
    """Every ``analysis.similarity`` metric for all pairs and layers: batched vs a numpy loop.

    ``features`` (``[lang, layer, item, d_model]``, e.g. cached activations) or random ones of
    the given shape (a shared component plus three times as much per-language noise, so that
    retrieval is about half right and every metric is far from its bounds). The reference
    computes each unordered pair and layer once, as reference implementations do
    (``interp.analysis.similarity_reference``); both must agree within 1e-5.
    """
    import numpy as np

    from interp.analysis import similarity as sim
    from interp.analysis import similarity_reference as ref

    if features is None:
        gen = torch.Generator().manual_seed(seed)
        shared = torch.randn(1, n_layers, n_items, d_model, generator=gen)
        noise = torch.randn(n_langs, n_layers, n_items, d_model, generator=gen)
        features = shared + 3 * noise
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_device = features.to(dev, torch.float32)
    host = features.float().numpy()
    results: dict = {}

    def batched() -> None:
        results["batched"] = {
            k: v.cpu()
            for k, v in sim.pair_metrics(on_device, max_components=max_components).items()
        }

    def loop() -> None:
        results["loop"] = ref.unordered_pair_metrics(host, max_components=max_components)

    batched()  # warm-up: kernels and allocator
    timings = interleaved({"batched": batched, "loop": loop}, repeats, cuda=dev.type == "cuda")
    cpu_med = timings.cpu_median
    off = ~np.eye(features.shape[0], dtype=bool)
    max_diff = {
        m: float(np.abs(results["batched"][m].double().numpy() - results["loop"][m])[:, off].max())
        for m in sim.METRICS
    }
    med = timings.median
    return {
        "device": str(dev),
        "shape": list(features.shape),
        "pairs": features.shape[0] * (features.shape[0] - 1) // 2,
        "svcca_max_components": max_components,
        "cpu_threads": torch.get_num_threads(),
        "repeats": repeats,
        "median_s": med,
        "all_s": timings.times,
        "speedup loop/batched": med["loop"] / med["batched"],
        "cpu_s": cpu_med,
        "speedup loop/batched (cpu time)": cpu_med["loop"] / cpu_med["batched"],
        "max_abs_diff": max_diff,
        "peak_rss_mb": megabytes(timings.peak_rss),
        "rss_growth_mb": megabytes(timings.rss_growth),
        "cuda_peak_mb": megabytes(timings.cuda_peak),
    }


def bench_refusal(
    spec: LoadedModel | str = "gemma-3-270m",
    *,
    lang: str = "en",
    n_train: int = 32,
    n_val: int = 8,
    layer_stride: int = 1,
    rows_per_pass: int = 256,
    repeats: int = 1,
    device: str | None = None,
) -> dict:
    """Refusal-direction selection: candidates stacked per forward pass vs one per pass.

    Both score every candidate (bypass, induce, KL) on the same validation prompts of the
    in-context testbed. The batched path stacks ``rows_per_pass`` prompt rows of several
    candidates per pass and runs the shared few-shot prefix once per candidate (keys and values
    reused); the reference loops over candidates, one forward pass of the whole, full-length
    validation batch each, as the paper's code does. Reports medians and whether both select
    the same candidate.
    """
    import numpy as np

    from interp.analysis.directions import candidate_directions, score_candidates, select_direction
    from interp.analysis.refusal import incontext_template, opener_token_ids, post_instruction_count
    from interp.data import load

    model = bench_model(spec, device)
    template = incontext_template(lang)
    records = load("safety", langs=[lang])
    harmful = template.wrap([r.text for r in records if r.harmful])
    harmless = template.wrap([r.text for r in records if not r.harmful])
    n_post = post_instruction_count(model, harmful + harmless)
    cands = candidate_directions(model, harmful[:n_train], harmless[:n_train], n_post)
    val_h, val_n = harmful[n_train : n_train + n_val], harmless[n_train : n_train + n_val]
    openers = opener_token_ids(model, template)
    layers = list(range(0, model.n_layers, layer_stride))
    chosen: dict[str, tuple[int, int]] = {}
    scored: dict[str, object] = {}

    def method(name: str, rows: int, reuse: bool) -> Callable[[], None]:
        def run() -> None:
            scores = score_candidates(
                model, cands, val_h, val_n, openers, layers=layers, rows_per_pass=rows,
                reuse_prefix=reuse,
            )  # fmt: skip
            sel = select_direction(scores, model.n_blocks)
            chosen[name], scored[name] = (sel.layer, sel.pos), scores

        return run

    methods = {
        "batched": method("batched", rows_per_pass, True),
        "one_per_pass": method("one_per_pass", 1, False),
    }
    timings = interleaved(methods, repeats, cuda=model.device.type == "cuda")
    med = timings.median
    a, b = scored["batched"], scored["one_per_pass"]
    gap = max(
        float(np.nanmax(np.abs(getattr(a, k) - getattr(b, k)))) for k in ("bypass", "induce", "kl")
    )
    n_cands = int((~np.isnan(b.bypass)).sum())
    return {
        "model": model.name,
        "device": str(model.device),
        "lang": lang,
        "n_candidates": n_cands,
        "n_layers_scored": len(layers),
        "n_post_instruction_positions": n_post,
        "n_val_per_class": n_val,
        "rows_per_pass": rows_per_pass,
        "repeats": repeats,
        "median_s": med,
        "all_s": timings.times,
        "cuda_peak_mb": megabytes(timings.cuda_peak),
        "speedup one_per_pass/batched": med["one_per_pass"] / med["batched"],
        "max_score_gap": gap,
        "selected": chosen,
        "same_selection": chosen["batched"] == chosen["one_per_pass"],
    }


def bench_factual(
    spec: LoadedModel | str = "gemma-3-270m",
    *,
    n_facts: int = 100,
    langs: str = "en,fr,ja,sw",
    max_candidates: int = 10,
    n_demos: int = 3,
    batch_size: int = 16,
    repeats: int = 1,
    device: str | None = None,
) -> dict:
    """Candidate ranking of bundled facts: shared-prefix batches vs one forward per candidate.

    ``n_facts`` facts (spread over the relations) asked in every language of ``langs`` as
    few-shot clozes, with up to ``max_candidates`` candidates each. The naive shape runs
    prompt + candidate once per candidate (keeping only the logits it reads); the batched one is
    ``interp.analysis.factual.rank_candidates``. Both must give the same ranks.
    """
    from interp.analysis.factual import continuation, rank_candidates
    from interp.analysis.factual_data import bundled_facts, with_demonstrations

    model = bench_model(spec, device)
    codes = [x for x in langs.split(",") if x]
    per_relation = max(1, -(-n_facts // 4))
    facts = bundled_facts(codes, n_per_relation=per_relation, max_candidates=max_candidates, seed=0)
    pool = bundled_facts(codes, n_per_relation=None, max_candidates=2, seed=0)
    ids = sorted({f.fact_id for f in facts})[:n_facts]
    facts = with_demonstrations([f for f in facts if f.fact_id in ids], n_demos, 0, pool=pool)
    results: dict[str, list[list[str]]] = {}

    def batched() -> None:
        ranking = rank_candidates(model, facts, batch_size=batch_size)
        results["batched"] = [list(r) for r in ranking.ranking]

    @torch.inference_mode()
    def naive() -> None:
        out = []
        for f in facts:
            prompt = model.tokenize([f.prompt])[0]
            scores = []
            for c in f.candidates:
                cont = model.tokenizer(continuation(f.prompt, c, f.lang), add_special_tokens=False)[
                    "input_ids"
                ]
                ids_ = torch.tensor([prompt + cont], device=model.device)
                logits = model.hf(input_ids=ids_, logits_to_keep=len(cont) + 1).logits[0, :-1]
                logp = torch.log_softmax(logits.float(), dim=-1)
                scores.append(float(logp[torch.arange(len(cont)), torch.tensor(cont)].sum()))
            order = sorted(range(len(scores)), key=lambda i: -scores[i])
            out.append([f.candidates[i] for i in order])
        results["naive"] = out

    methods = {"naive": naive, "batched": batched}
    timings = interleaved(methods, repeats, cuda=model.device.type == "cuda")
    med = timings.median
    golds = [f.answer for f in facts]
    rank_of = {k: [r.index(g) for r, g in zip(v, golds)] for k, v in results.items()}
    return {
        "model": model.name,
        "device": str(model.device),
        "n_facts": len(ids),
        "langs": codes,
        "n_prompts": len(facts),
        "n_candidates": sum(len(f.candidates) for f in facts),
        "batch_size": batch_size,
        "repeats": repeats,
        "median_s": med,
        "all_s": timings.times,
        "speedup naive/batched": med["naive"] / med["batched"],
        "same_gold_ranks": rank_of["naive"] == rank_of["batched"],
        "same_top1": [r[0] for r in results["naive"]] == [r[0] for r in results["batched"]],
    }


def bench_steering(
    spec: LoadedModel | str = "gemma-3-270m",
    *,
    n_prompts: int = 16,
    layer_stride: int = 3,
    coeffs: str = "2,4,8,16",
    max_new_tokens: int = 32,
    rows_per_pass: int = 512,
    repeats: int = 1,
    device: str | None = None,
) -> dict:
    """Language-steering sweep: every setting stacked in one generation vs one per setting.

    The en -> fr steering vector (mean residual difference over 32 bundled parallel sentences,
    not timed) is added at every ``layer_stride``-th layer with each coefficient of ``coeffs``,
    plus an unsteered setting; ``n_prompts`` English sentences are continued greedily for
    ``max_new_tokens`` tokens. The stacked path is
    ``interp.analysis.steering_sweep.generate_stacked`` (``rows_per_pass`` rows per generation);
    the reference generates the prompt batch once per setting under ``Add``. Reports medians, the
    speedup and the share of answers whose token ids (and texts) agree: all of them on CPU; on a
    GPU a larger batch may pick other kernels, whose rounding can flip a near-tie.
    """
    from interp.analysis import steering as st
    from interp.analysis import steering_sweep as sw
    from interp.analysis.similarity import parallel_activations
    from interp.errors import PolylensError

    try:
        grid = [float(c) for c in coeffs.split(",") if c.strip()]
    except ValueError:
        grid = []
    if not grid:
        raise PolylensError(f"coeffs {coeffs!r}: give comma-separated numbers, e.g. 2,4,8,16")
    model = bench_model(spec, device)
    sentences = st.parallel_sentences(["en", "fr"])
    prompts = sentences["en"][:n_prompts]
    train = {lang: lines[-32:] for lang, lines in sentences.items()}
    means = st.language_means(parallel_activations(model, train, pooling="mean", progress=False))
    vectors = st.steering_vectors(means)[0, 1]
    layers = list(range(1, model.n_layers, layer_stride))
    settings = [sw.Setting("none"), *sw.vector_settings("vector", vectors, layers, grid)]
    options = dict(max_new_tokens=max_new_tokens, batch_size=len(prompts))
    results: dict = {}
    # Warm-up (kernels, allocator, stop-criteria set-up), not timed: the first method would pay it.
    sw.generate_stacked(model, prompts[:2], settings[:2], max_new_tokens=2)

    def stacked() -> None:
        results["stacked"] = sw.generate_stacked(
            model, prompts, settings, rows_per_pass=rows_per_pass, **options
        )

    def one_per_setting() -> None:
        results["one_per_setting"] = sw.generate_each(model, prompts, settings, **options)

    methods = {"one_per_setting": one_per_setting, "stacked": stacked}
    timings = interleaved(methods, repeats, cuda=model.device.type == "cuda")
    med = timings.median
    a, b = results["stacked"], results["one_per_setting"]
    pairs = [(i, p) for i in range(len(settings)) for p in range(len(prompts))]
    return {
        "model": model.name,
        "device": str(model.device),
        "dtype": dtype_name(model.dtype),
        "n_prompts": len(prompts),
        "n_settings": len(settings),
        "layers": layers,
        "coeffs": grid,
        "max_new_tokens": max_new_tokens,
        "rows_per_pass": rows_per_pass,
        "repeats": repeats,
        "median_s": med,
        "all_s": timings.times,
        "cuda_peak_mb": megabytes(timings.cuda_peak),
        "speedup one_per_setting/stacked": med["one_per_setting"] / med["stacked"],
        "same_ids": sum(a.ids[i][p] == b.ids[i][p] for i, p in pairs) / len(pairs),
        "same_texts": sum(a.texts[i][p] == b.texts[i][p] for i, p in pairs) / len(pairs),
    }
