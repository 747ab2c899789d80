"""The ``polylens`` command line. ``main(argv)`` takes an argument list so tests call it in-process.

The application's entry point (the console script ``polylens``, or ``python -m experiments.cli``):
it sits on top of the library (``interp``, ``probes``) and the experiment registry, and nothing
below imports it.

Every user error (``PolylensError`` or a bad argument) prints one line to stderr and exits with
code 2, and so does a full disk (any ``OSError`` with errno ENOSPC, named by its file); Ctrl-C
prints one line and exits with code 130, SIGTERM one line and 143 (128 + 15), both after the
cleanup a failed command does (an unfinished result directory is removed). Arguments, output
paths and input files are checked before a model loads.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from experiments import experiment_list, run_experiment
from experiments.endings import Terminated, no_space, sigterm_raises
from experiments.fields import repeated
from experiments.notebooks import add_parser as add_notebooks_parser
from interp.checks import (
    check_device,
    check_output_dir,
    check_output_file,
    read_text_file,
    split_lines,
)
from interp.data import cli as data_cli
from interp.errors import PolylensError
from interp.lens.tuned import TunedLensConfig
from interp.model.dtypes import DTYPES
from interp.storage.files import atomic_write_text
from interp.testbeds.refusal import RefusalRecipe

TUNED_DEFAULTS = TunedLensConfig()


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the CLI's format), not usage + message."""

    def error(self, message: str):  # noqa: D102 (argparse's hook)
        raise PolylensError(f"{message} (see `{self.prog} --help`)")


def _positive(kind: type) -> Callable[[str], int | float]:
    """An argparse type: a number of ``kind`` above zero."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0:
            noun = "integer" if kind is int else "number"
            raise argparse.ArgumentTypeError(f"expected a positive {noun}, got {text!r}")
        return value

    return parse


def _device(text: str) -> str:
    """An argparse type: a device this machine has (``interp.checks.check_device``)."""
    try:
        return check_device(text)
    except PolylensError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _langs(text: str) -> str:
    """An argparse type: comma-separated language codes, each once (returned comma-joined).

    A YAML list (``[en,fr]``, as ``langs=[en,fr]`` takes) reads the same."""
    listed = text.strip()
    if listed.startswith("[") and listed.endswith("]"):
        listed = listed[1:-1]
    codes = [code.strip() for code in listed.split(",")]
    if "" in codes:
        raise argparse.ArgumentTypeError(
            f"{text!r} has an empty entry; give comma-separated language codes, e.g. en,fr"
        )
    twice = repeated(codes)
    if twice is not None:
        raise argparse.ArgumentTypeError(f"{twice!r} is listed twice; give each language once")
    return ",".join(codes)


class _ExperimentsHelp(argparse.Action):
    """``polylens run --help``: lists the registered experiments, imported only when asked."""

    def __init__(
        self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None
    ):
        super().__init__(option_strings, dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        name = getattr(namespace, "name", None)
        if name:  # `polylens run NAME --help`: that experiment's config fields
            from experiments import get_experiment
            from experiments.base import fields_usage

            experiment = get_experiment(name)
            parser.description = f"{name}: {experiment.description}"
            parser.epilog = fields_usage(experiment.config_class, name)
        else:
            parser.epilog = "experiments:\n" + experiment_list()
        parser.print_help()
        parser.exit()


def _cmd_models(args: argparse.Namespace) -> None:
    from interp.model.convert import EMBEDDED
    from interp.storage.paths import cache_dir

    print(f"cache: {cache_dir() / 'models'}")
    for m in EMBEDDED.values():
        state = "converted" if m.is_converted() else "not converted (first load converts it)"
        print(f"{m.name:24s} {state:40s} {m.description}")


def _read_prompts(args: argparse.Namespace) -> tuple[list[str], Callable[[int], str]]:
    """The prompts, and what names prompt i in an error (its file and line, for a file)."""
    if args.prompts:
        text = read_text_file(args.prompts, "prompt file")
        # Blank lines are skipped, but an error names the prompt by its line in the file.
        numbered = [(i, line) for i, line in enumerate(split_lines(text), 1) if line.strip()]
        return [line for _, line in numbered], lambda i: f"{args.prompts}:{numbered[i][0]}"
    from interp.data import load, prompts_of

    langs = args.langs.split(",") if args.langs else None
    return prompts_of(load(args.dataset, langs=langs)), "prompt {}".format


def _cmd_extract(args: argparse.Namespace) -> None:
    from interp.extract import extract_to_store, plan_extraction
    from interp.model.models import load_model
    from interp.storage.store import ActivationStore, entry_key

    if bool(args.prompts) == bool(args.dataset):
        raise PolylensError("give exactly one of --prompts FILE or --dataset NAME")
    if args.out:
        check_output_dir(args.out)
    prompts, where = _read_prompts(args)
    model = load_model(
        args.model, **_model_options(args, dtype=args.model_dtype or "auto", device=args.device)
    )
    # Planned here, not by extract(), so that a prompt too long is named by its file and line.
    plan = plan_extraction(
        model,
        prompts,
        layers=args.layers,
        positions=args.positions,
        dtype=args.dtype,
        where=where,
    )
    store = ActivationStore(args.out)
    acts = extract_to_store(plan, store, backend=args.backend, batch_size=args.batch_size)
    key = entry_key(acts.meta)
    shape = tuple(acts.shape)  # from the shards' headers: nothing is read
    print(f"{len(prompts)} prompts -> {store.root / key}  (rows x layers x d_model = {shape})")


def _cmd_cache(args: argparse.Namespace) -> None:
    import shlex

    from interp.storage.store import KEY_PATTERN, ActivationStore

    store = ActivationStore(args.root)
    if args.key and not KEY_PATTERN.fullmatch(args.key) and args.action == "verify":
        # A store or entry directory is the natural guess after `polylens extract --out DIR`.
        where = Path(args.key)
        if where.is_dir() and KEY_PATTERN.fullmatch(where.resolve().name):
            root = shlex.quote(str(where.resolve().parent))
            hint = f"polylens cache verify {where.resolve().name} --root {root}"
            raise PolylensError(f"{args.key} is a store entry directory, not a key; run `{hint}`")
        if where.is_dir():
            raise PolylensError(
                f"{args.key} is a directory, not an entry key; to verify the store in it, "
                f"run `polylens cache verify --root {shlex.quote(args.key)}`"
            )
    if args.action == "ls":
        rows = store.ls()
        if not rows:
            print(f"no entries in {store.root}")
        for r in rows:
            if r["status"] == "complete":
                print(
                    f"{r['key']}  {r['model']:22s} {r['prompts']:6d} prompts"
                    f"  {r['layers']:3d} layers  {r['positions']:12s} {r['dtype']:9s}"
                    f" {r['bytes'] / 1e6:9.1f} MB"
                )
            elif r["status"] == "incomplete":
                print(f"{r['key']}  incomplete (resumes on the next identical extract)")
            else:
                print(f"{r['key']}  {r['status']}: {r['problem']}")
    elif args.action == "verify":
        if args.key:
            keys, bad = [args.key], store.verify(args.key)
        else:
            rows = [r for r in store.ls() if r["status"] in ("complete", "corrupt")]
            keys = [r["key"] for r in rows]
            bad = [r["problem"] for r in rows if r["status"] == "corrupt"]
            bad += [p for r in rows if r["status"] == "complete" for p in store.verify(r["key"])]
        for p in bad:
            print(p)
        print(f"verified {len(keys)} entries: {'ok' if not bad else f'{len(bad)} problems'}")
        if bad:
            sys.exit(1)
    else:
        if not args.key:
            raise PolylensError("`polylens cache rm` needs a KEY (see `polylens cache ls`)")
        store.rm(args.key)
        print(f"removed {args.key}")


def _write_out(path: str, text: str) -> None:
    """Write ``text`` to a file ``check_output_file`` accepted, atomically (never half a file)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def _report(result: dict, out: str | None) -> None:
    """Print a benchmark's JSON and write it to ``out``."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        _write_out(out, text)


def _bench(name: str, *fields: str, module: str = "interp.bench") -> Callable:
    """A ``polylens bench`` command: check ``--out``, call ``module.name`` (with ``--model``
    first where the benchmark has one, then ``fields`` and ``--device`` from the arguments),
    print and write the JSON. Imported on use, so ``polylens --help`` stays fast."""

    def command(args: argparse.Namespace) -> None:
        check_output_file(args.out)
        bench = getattr(importlib.import_module(module), name)
        model = [args.model] if hasattr(args, "model") else []
        options = {f: getattr(args, f) for f in fields}
        _report(bench(*model, **options, device=args.device), args.out)

    return command


def _bench_parser(
    bench: argparse._SubParsersAction, name: str, *, help: str, model: bool = True
) -> argparse.ArgumentParser:
    """A ``polylens bench NAME`` parser with the arguments every benchmark shares."""
    b = bench.add_parser(name, help=help)
    if model:
        b.add_argument("--model", default="gemma-3-270m")
    b.add_argument("--device", type=_device, default=None)
    b.add_argument("--out", default=f"bench_{name}.json", help="JSON file for the results")
    return b


def _cmd_run(args: argparse.Namespace) -> None:
    from experiments import get_experiment
    from experiments.base import parse_overrides
    from experiments.results import plotly_copy

    overrides = {"model": args.model, "langs": args.langs, "out": args.out, "device": args.device}
    config_class = get_experiment(args.name).config_class
    settings = parse_overrides(config_class, args.name, args.overrides + args.extra)
    with plotly_copy(args.self_contained):
        path = run_experiment(args.name, args.config, overrides, settings)
    print(f"results: {path}  (open {path / 'report.html'})")


def _cmd_plan(args: argparse.Namespace) -> None:
    from experiments import get_experiment, resolve_config
    from experiments.base import parse_overrides
    from experiments.plan import describe_plan, make_plan

    overrides = {"model": args.model, "langs": args.langs, "device": args.device}
    config_class = get_experiment(args.name).config_class
    settings = parse_overrides(config_class, args.name, args.overrides + args.extra)
    config = resolve_config(args.name, args.config, overrides, settings)
    plan = make_plan(args.name, config, timed=not args.no_timing)
    if args.json:
        _write_out(args.json, json.dumps(plan.as_dict(), indent=2))
    print(describe_plan(plan))


def _cmd_bench_plan(args: argparse.Namespace) -> None:
    from experiments.plan import measure_plan

    check_output_file(args.out)
    only = [n for n in args.only.split(",") if n] if args.only else None
    _report(measure_plan(only, full=args.full, device=args.device), args.out)


def _cmd_report(args: argparse.Namespace) -> int:
    from experiments.report import run_report

    only = [n for n in args.only.split(",") if n] if args.only else None
    outcomes = run_report(
        args.out,
        full=args.full,
        only=only,
        model=args.model,
        model_options=_model_options(args, dtype=args.dtype, device=args.device),
        self_contained=args.self_contained,
    )
    failed = [o.name for o in outcomes if o.status == "failed"]
    if failed:
        print(f"polylens: {len(failed)} experiment(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def add_model_options(p: argparse.ArgumentParser, *, dtype_flag: str = "--dtype") -> None:
    """The options that say how a model loads: compute dtype, device, placement over devices."""
    p.add_argument(
        dtype_flag,
        default=None,
        choices=["auto", *DTYPES],
        help="weights' compute dtype (auto: the checkpoint's own on a GPU, float32 on a CPU)",
    )
    p.add_argument("--device", type=_device, default=None, help="cuda or cpu")
    p.add_argument(
        "--device-map",
        default=None,
        help="spread the model over devices with accelerate (auto, balanced, sequential)",
    )
    p.add_argument(
        "--max-memory",
        type=_max_memory,
        default=None,
        help="with --device-map, the most each device may hold: '{0: 20GiB, cpu: 60GiB}'",
    )
    p.add_argument(
        "--offload-folder", default=None, help="with --device-map, where weights offload to disk"
    )


def _max_memory(text: str) -> dict:
    from experiments.fields import convert, parse_value

    try:
        return convert(parse_value("max_memory", text, dict[str, str]), dict[str, str])
    except PolylensError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    except Exception:  # fields' _Invalid: not a mapping of devices to sizes
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a mapping of devices to sizes, e.g. '{{0: 20GiB, cpu: 60GiB}}'"
        ) from None


def _model_options(args: argparse.Namespace, *, dtype: str | None, device: str | None) -> dict:
    """``load_model``'s keywords from the options of ``add_model_options`` (None: not given)."""
    return {
        "dtype": dtype,
        "device": device,
        "device_map": args.device_map,
        "max_memory": args.max_memory,
        "offload_folder": args.offload_folder,
    }


def _cmd_tuned_lens(args: argparse.Namespace) -> None:
    from interp.lens.tuned import TunedLensConfig, evaluate_tuned_lens, load_or_train_tuned_lens
    from interp.model.models import load_model
    from interp.storage.store import ActivationStore

    config = TunedLensConfig(steps=args.steps, tokens_per_step=args.tokens_per_step, lr=args.lr)
    if args.out:
        check_output_file(args.out)
    model = load_model(
        args.model, **_model_options(args, dtype=args.dtype or "auto", device=args.device)
    )
    store = ActivationStore()
    lens = load_or_train_tuned_lens(model, config, store=store)
    rows = evaluate_tuned_lens(model, lens, config, store=store)
    print("layer  KL logit lens  KL tuned lens   (nats, held-out test split)")
    for r in rows:
        print(f"{r['layer']:5d}  {r['kl_logit_lens']:13.3f}  {r['kl_tuned_lens']:13.3f}")
    if args.out:
        _write_out(args.out, json.dumps(rows, indent=2))


def _cmd_testbed(args: argparse.Namespace) -> None:
    from interp.data.refusal import DIALOGUES
    from interp.model.models import load_model
    from interp.testbeds.refusal import (
        behaviour_card,
        build_refusal_testbed,
        card_settings,
        write_card,
    )

    langs = args.langs.split(",") if args.langs else list(DIALOGUES)
    unknown = [lang for lang in langs if lang not in DIALOGUES]
    if unknown:
        raise PolylensError(
            f"no refusal phrases for {', '.join(unknown)}; the card covers {', '.join(DIALOGUES)}"
        )
    recipe = RefusalRecipe(steps=args.steps, seed=args.seed, learning_rate=args.lr)
    directory = build_refusal_testbed(recipe, name=args.name, force=args.force)
    print(f"testbed: {directory}")
    settings = {"langs": langs, "n_per_class": args.n_per_class}
    if args.no_card or (card_settings(directory) == settings and not args.force):
        return
    start = time.perf_counter()
    base = load_model(recipe.base, device="cpu", dtype="float32")
    tuned = load_model(str(directory), device="cpu", dtype="float32")
    card, answers = behaviour_card(base, tuned, langs, n_per_class=args.n_per_class)
    write_card(directory, card, answers, settings)
    print(f"behavioural card ({time.perf_counter() - start:.0f} s): {directory / 'card.csv'}")
    print("lang  class     refused: phrases before -> after | score before -> after | agree after")
    rows = {(r["model"], r["lang"], r["kind"]): r for r in card}
    for lang in langs:
        for kind in ("harmful", "harmless"):
            b, t = rows["base", lang, kind], rows["tuned", lang, kind]
            phrases = f"{b['refused_by_phrases']:6.0%} -> {t['refused_by_phrases']:4.0%}"
            score = f"{b['refused_by_score']:6.0%} -> {t['refused_by_score']:4.0%}"
            print(f"{lang:5s} {kind:9s} {phrases}{'':9s}| {score}{'':7s}| {t['judges_agree']:.0%}")


SELF_CONTAINED_HELP = (
    "give each result its own plotly.js (4.8 MB) for its interactive figures, instead of the "
    "one copy its site shares (OUT/assets/plotly.min.js)"
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with ``--help`` on every subcommand."""
    parser = _Parser(
        prog="polylens",
        description="How does a language model handle many languages inside?",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the embedded models and whether they are converted")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("extract", help="extract residual activations into the activation store")
    p.add_argument(
        "--model", default="gemma-3-270m", help="embedded name, directory, .gguf or hub id"
    )
    p.add_argument("--prompts", help="text file with one prompt per line")
    p.add_argument("--dataset", help="a bundled dataset (see `polylens data ls`)")
    p.add_argument("--langs", type=_langs, help="comma-separated ISO 639-1 codes (with --dataset)")
    p.add_argument(
        "--layers", default="all", help="'all' or comma-separated indices (0 = embeddings)"
    )
    p.add_argument(
        "--positions",
        default=None,
        help="last, mean, all, or a token index (default: last; mean for an encoder)",
    )
    p.add_argument("--backend", default="hooks", choices=["hooks", "transformer_lens", "nnsight"])
    p.add_argument("--batch-size", type=_positive(int), default=16)
    p.add_argument(
        "--dtype", default="float32", choices=list(DTYPES), help="stored activations' dtype"
    )
    add_model_options(p, dtype_flag="--model-dtype")
    p.add_argument("--out", default=None, help="activation store directory (default: the cache)")
    p.set_defaults(func=_cmd_extract)

    p = sub.add_parser("cache", help="list, verify or remove activation store entries")
    p.add_argument("action", choices=["ls", "verify", "rm"])
    p.add_argument("key", nargs="?", help="entry key (for verify: all entries when omitted)")
    p.add_argument("--root", default=None, help="activation store directory (default: the cache)")
    p.set_defaults(func=_cmd_cache)

    p = sub.add_parser("bench", help="benchmarks")
    bench = p.add_subparsers(dest="bench", required=True)
    b = _bench_parser(
        bench, "extract", help="bare forward vs polylens hooks vs TransformerLens vs nnsight"
    )
    b.add_argument("--n-prompts", type=_positive(int), default=256)
    b.add_argument("--repeats", type=_positive(int), default=5)
    b.add_argument("--batch-size", type=_positive(int), default=32)
    b.add_argument("--dtype", default="float32", choices=list(DTYPES), help="weights")
    b.set_defaults(func=_bench("bench_extract", "n_prompts", "repeats", "batch_size", "dtype"))
    b = _bench_parser(
        bench, "lens", help="polylens logit lens vs TransformerLens's all-logits route"
    )
    b.add_argument("--n-prompts", type=_positive(int), default=256)
    b.add_argument("--repeats", type=_positive(int), default=3)
    b.set_defaults(func=_bench("bench_lens", "n_prompts", "repeats"))

    b = _bench_parser(bench, "probes", help="batched probes vs scikit-learn per layer and fold")
    b.add_argument("--n-per-class", type=_positive(int), default=100)
    b.add_argument(
        "--repeats", type=_positive(int), default=3, help="interleaved repeats (medians)"
    )
    b.set_defaults(func=_bench("bench_probes", "n_per_class", "repeats", module="probes.bench"))

    b = _bench_parser(
        bench,
        "interventions",
        help="plain forward vs directional ablation at every site (3 x blocks)",
    )
    b.add_argument("--n-prompts", type=_positive(int), default=256)
    b.add_argument("--repeats", type=_positive(int), default=5)
    b.add_argument("--batch-size", type=_positive(int), default=32)
    b.set_defaults(func=_bench("bench_interventions", "n_prompts", "repeats", "batch_size"))

    b = _bench_parser(
        bench,
        "refusal",
        help="refusal-direction selection: stacked candidates vs one per forward pass",
    )
    b.add_argument("--lang", default="en", help="language of the in-context testbed")
    b.add_argument("--repeats", type=_positive(int), default=1)
    b.set_defaults(func=_bench("bench_refusal", "lang", "repeats"))

    b = _bench_parser(
        bench,
        "similarity",
        model=False,
        help="every similarity metric, all pairs and layers: batched vs a loop",
    )
    b.add_argument("--repeats", type=_positive(int), default=3)
    b.set_defaults(func=_bench("bench_similarity", "repeats"))

    b = _bench_parser(
        bench,
        "factual",
        help="candidate ranking: shared-prefix batches vs one forward per candidate",
    )
    b.add_argument("--n-facts", type=_positive(int), default=100)
    b.add_argument(
        "--langs", type=_langs, default="en,fr,ja,sw", help="comma-separated language codes"
    )
    b.add_argument("--max-candidates", type=_positive(int), default=10)
    b.add_argument("--batch-size", type=_positive(int), default=16)
    b.add_argument("--repeats", type=_positive(int), default=1)
    b.set_defaults(
        func=_bench(
            "bench_factual",
            "n_facts",
            "langs",
            "max_candidates",
            "batch_size",
            "repeats",
        )
    )

    b = _bench_parser(
        bench,
        "steering",
        help="language-steering sweep: settings stacked in one generation vs one per setting",
    )
    b.add_argument("--n-prompts", type=_positive(int), default=16)
    b.add_argument("--layer-stride", type=_positive(int), default=3)
    b.add_argument("--coeffs", default="2,4,8,16", help="comma-separated coefficients")
    b.add_argument("--max-new-tokens", type=_positive(int), default=32)
    b.add_argument("--rows-per-pass", type=_positive(int), default=512)
    b.add_argument("--repeats", type=_positive(int), default=1)
    b.set_defaults(
        func=_bench(
            "bench_steering",
            "n_prompts",
            "layer_stride",
            "coeffs",
            "max_new_tokens",
            "rows_per_pass",
            "repeats",
        )
    )

    b = _bench_parser(
        bench,
        "plan",
        model=False,
        help="polylens plan against real runs: store size, peak memory and time per experiment",
    )
    b.add_argument("--only", default=None, help="comma-separated experiment names")
    b.add_argument("--full", action="store_true", help="full defaults, not the quick profile")
    b.set_defaults(func=_cmd_bench_plan)

    p = sub.add_parser("tuned-lens", help="train (once, then cached) and evaluate a tuned lens")
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--steps", type=_positive(int), default=TUNED_DEFAULTS.steps)
    p.add_argument("--tokens-per-step", type=_positive(int), default=TUNED_DEFAULTS.tokens_per_step)
    p.add_argument("--lr", type=_positive(float), default=TUNED_DEFAULTS.lr)
    add_model_options(p)
    p.add_argument("--out", default=None, help="JSON file for the per-layer KL")
    p.set_defaults(func=_cmd_tuned_lens)

    p = sub.add_parser(
        "testbed",
        help="build a positive-control model (once, then cached) and its behavioural card",
        description="Build gemma-3-270m-refusal-en: the embedded Gemma 3 270M base model "
        "LoRA-tuned to refuse harmful requests in English (interp/testbeds/refusal.py), saved in "
        "the polylens cache as a named model every experiment can load, then its behavioural "
        "card: refusal rates before and after tuning in every language, judged two ways. About "
        "25 minutes for the build and 90 for the card on two busy CPU cores; later runs read both.",
    )
    p.add_argument("kind", choices=["refusal"], help="which testbed")
    p.add_argument("--steps", type=_positive(int), default=RefusalRecipe.steps, help="LoRA steps")
    p.add_argument("--seed", type=int, default=RefusalRecipe.seed, help="seed of the tuning")
    p.add_argument(
        "--lr", type=_positive(float), default=RefusalRecipe.learning_rate, help="learning rate"
    )
    p.add_argument("--name", default="gemma-3-270m-refusal-en", help="its name in the cache")
    p.add_argument("--force", action="store_true", help="rebuild even if it is in the cache")
    p.add_argument("--langs", type=_langs, default=None, help="card languages (default: all 12)")
    p.add_argument(
        "--n-per-class", type=_positive(int), default=None, help="card instructions per class"
    )
    p.add_argument("--no-card", action="store_true", help="build only, no behavioural card")
    p.set_defaults(func=_cmd_testbed)

    p = sub.add_parser(
        "run",
        help="run a registered experiment (`polylens run --help` lists them)",
        add_help=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "-h", "--help", action=_ExperimentsHelp, help="show this help and the experiments"
    )
    p.add_argument("name", help="experiment name (`polylens run --help` lists them)")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="field=value",
        help="set config fields, after --config (also --field value; `polylens run NAME --help` "
        "lists them), e.g. n_words=3 'langs=[en,fr]' lens=tuned",
    )
    p.add_argument("--config", default=None, help="YAML file overriding the defaults")
    p.add_argument("--model", default=None, help="model (overrides the config)")
    p.add_argument(
        "--langs", type=_langs, default=None, help="comma-separated languages (overrides)"
    )
    p.add_argument("--out", default=None, help="parent directory of the result (overrides)")
    p.add_argument("--device", type=_device, default=None, help="cuda or cpu")
    p.add_argument("--self-contained", action="store_true", help=SELF_CONTAINED_HELP)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "plan",
        help="estimate a run (parameters, memory, store size, tokens, time) before it loads",
        description="Estimate what `polylens run NAME` will cost, from the model's config and "
        "tokenizer alone (no weights are read): parameters, weight memory in the chosen dtype, "
        "activation store size on disk, peak memory, tokens run forward, and the model's time "
        "on this machine from a one-block calibration. Takes the options and config fields of "
        "`polylens run`.",
    )
    p.add_argument("name", help="experiment name (`polylens run --help` lists them)")
    p.add_argument("overrides", nargs="*", metavar="field=value", help="config fields, as for run")
    p.add_argument("--config", default=None, help="YAML file overriding the defaults")
    p.add_argument("--model", default=None, help="model (overrides the config)")
    p.add_argument("--langs", type=_langs, default=None, help="comma-separated languages")
    p.add_argument("--device", type=_device, default=None, help="cuda or cpu")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the plan as JSON")
    p.add_argument("--no-timing", action="store_true", help="skip the one-block calibration")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser(
        "report", help="run every experiment and write one offline site (DIR/index.html)"
    )
    p.add_argument("--full", action="store_true", help="full defaults, not the quick profile")
    p.add_argument("--out", default="results", help="site directory (default: results)")
    p.add_argument("--only", default=None, help="comma-separated experiment names")
    p.add_argument("--model", default=None, help="model for every experiment (overrides)")
    add_model_options(p)
    p.add_argument("--self-contained", action="store_true", help=SELF_CONTAINED_HELP)
    p.set_defaults(func=_cmd_report)

    data_cli.add_parser(sub)
    add_notebooks_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code.

    2 for a user error or a full disk, 130 for Ctrl-C, 143 for SIGTERM.
    """
    try:
        parser = build_parser()
        # `polylens run NAME --n-words 3`: options the parser does not know are config fields.
        args, extra = parser.parse_known_args(argv)
        if extra and args.command not in ("run", "plan"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.extra = extra
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
        with sigterm_raises():
            code = args.func(args)
    except PolylensError as e:
        print(f"polylens: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("polylens: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("polylens: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except Exception as e:
        message = no_space(e)
        if message is None:
            raise
        print(f"polylens: error: {message}", file=sys.stderr)
        return 2
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
