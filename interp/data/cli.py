"""``polylens data ls | show | check | langs``.

``add_parser`` registers the commands on the application's parser (``experiments.cli``).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from interp.data.languages import LANGUAGES
from interp.data.loader import DATASETS, covered_langs, load, read_items


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``data`` command on the main parser."""
    p = sub.add_parser("data", help="list, show and validate the bundled datasets")
    data = p.add_subparsers(dest="data_command", required=True)
    ls = data.add_parser("ls", help="datasets with their item counts and languages")
    ls.set_defaults(func=_ls)
    show = data.add_parser("show", help="print a few records of a dataset")
    show.add_argument("name", help="dataset name (see `polylens data ls`)")
    show.add_argument("--langs", default=None, help="comma-separated ISO 639-1 codes")
    show.add_argument("--split", default=None, choices=["train", "test"])
    show.add_argument("--n", type=int, default=5, help="number of items to show")
    show.set_defaults(func=_show)
    check = data.add_parser("check", help="validate every dataset; non-zero exit on violations")
    check.set_defaults(func=_check)
    langs = data.add_parser("langs", help="the supported languages")
    langs.set_defaults(func=_langs)


def _ls(args: argparse.Namespace) -> None:
    for name, d in DATASETS.items():
        print(
            f"{name:9s} {len(read_items(name)):5d} items  {','.join(covered_langs(name)):36s}"
            f"  {d.description}"
        )


def _show(args: argparse.Namespace) -> None:
    langs = args.langs.split(",") if args.langs else None
    records = load(args.name, langs=langs, split=args.split)
    n_langs = len(langs) if langs else len(covered_langs(args.name))
    for record in records[: args.n * n_langs]:
        fields = {k: v for k, v in asdict(record).items() if k not in ("id", "lang")}
        print(f"{record.id:32s} {record.lang}  {fields}")


def _check(args: argparse.Namespace) -> None:
    from interp.data.check import check_all

    report = check_all()
    print(report.table())
    for violation in report.violations:
        print(violation)
    for note in report.notes:
        print(f"note: {note}")
    print(f"{len(report.violations)} violations")
    if not report.ok:
        sys.exit(1)


def _langs(args: argparse.Namespace) -> None:
    for lang in LANGUAGES.values():
        print(
            f"{lang.code}  {lang.name:9s} {lang.endonym:10s} {lang.script:5s} "
            f"{lang.resource:7s} {lang.family}"
        )
