"""``altdiffusion mini ...``: the mini world: rebuild the bundled model, report on it, write its data."""

from __future__ import annotations

import argparse
from pathlib import Path

from altdiffusion import mini as mini_defaults
from altdiffusion.cli.common import language_list, positive_int


def add_mini_parsers(sub: argparse._SubParsersAction) -> None:
    mini = sub.add_parser("mini", help="the mini world: rebuild the bundled model, report on it").add_subparsers(
        dest="mini_command", required=True
    )
    _add_build_parser(mini)
    _add_report_parser(mini)
    _add_composition_parser(mini)
    _add_data_parser(mini)
    _add_eval_data_parser(mini)


def _add_build_parser(mini: argparse._SubParsersAction) -> None:
    p = mini.add_parser("build", help="run the whole AltCLIP -> AltDiffusion recipe on the mini world, from a seed")
    p.add_argument("--out", default="build/mini", help="working folder (data, every stage's model, build.json)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="a few steps per stage, to check the recipe runs")
    p.add_argument(
        "--steps-scale",
        type=float,
        default=1.0,
        help="multiply every stage's steps (e.g. 0.5 for a quicker, weaker build)",
    )
    p.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the from-scratch multilingual CLIP (the report's compute comparison)",
    )
    p.add_argument(
        "--scratch-segments",
        type=positive_int,
        default=None,
        help="carry the from-scratch baseline up to this many 500-step segments (default 40; it stops earlier "
        "at AltCLIP-mini's Chinese R@1 or a plateau); a rerun continues it",
    )
    p.add_argument(
        "--grounding",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train the words' cross-attention onto their things after quality (three ground-* stages, about "
        "1 h 45 min on 2 CPU cores; the shipped weights were built with them; --no-grounding ends at quality)",
    )
    p.add_argument("--install", action="store_true", help="make the result the bundled model (`--model mini`)")
    p.set_defaults(func=cmd_mini_build)


def _add_report_parser(mini: argparse._SubParsersAction) -> None:
    p = mini.add_parser(
        "report", help="per-language accuracy of AltCLIP-mini and AltDiffusion-mini (JSON, Markdown, PNG)"
    )
    p.add_argument("--clip", default="mini", help="AltCLIP folder (default: the bundled AltCLIP-mini)")
    p.add_argument("--model", default="mini", help="AltDiffusion folder (default: the bundled AltDiffusion-mini)")
    p.add_argument("--out", default="reports/mini")
    p.add_argument(
        "--scenes",
        type=positive_int,
        default=mini_defaults.REPORT_SCENES,
        help="one-thing scenes per split and language (128 x 2 seeds: a rate's standard error is about 2.5 points)",
    )
    p.add_argument("--seeds", type=positive_int, default=2, help="seeds per scene")
    p.add_argument(
        "--guidance",
        type=float,
        default=mini_defaults.GUIDANCE,
        help="classifier-free guidance scale for the generation tests (default: %(default)s, the mini models' own)",
    )
    p.add_argument("--build-log", default=None, help="build.json for the compute comparison (default: the bundled one)")
    p.set_defaults(func=cmd_mini_report)


def _add_composition_parser(mini: argparse._SubParsersAction) -> None:
    p = mini.add_parser(
        "composition",
        help=(
            "two-thing diagnostics: does the picture follow the relation and keep each thing's attributes; "
            "does the conditioning carry the relation; does the UNet expect each thing in its place, and what does it read"
        ),
    )
    p.add_argument("--model", default="mini", help="AltDiffusion folder (default: the bundled AltDiffusion-mini)")
    p.add_argument(
        "--scenes",
        type=positive_int,
        default=64,
        help="scenes (the report's first N of each set) for every check but the role probe",
    )
    p.add_argument(
        "--languages", default="en,zh", help="comma-separated languages for every check but the role probe (English)"
    )
    p.add_argument(
        "--guidance",
        type=float,
        default=mini_defaults.GUIDANCE,
        help="classifier-free guidance scale of those images (default: %(default)s, the report's)",
    )
    p.set_defaults(func=cmd_mini_composition)


def _add_data_parser(mini: argparse._SubParsersAction) -> None:
    p = mini.add_parser("data", help="write mini-world webdataset shards (9-language captions and labels)")
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=positive_int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="train", choices=["train", "seen", "heldout"])
    p.add_argument("--shard-size", type=positive_int, default=1000)
    p.set_defaults(func=cmd_mini_data)


def _add_eval_data_parser(mini: argparse._SubParsersAction) -> None:
    p = mini.add_parser("eval-data", help="the report's evaluation data in the layouts `altdiffusion eval` reads")
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=positive_int, default=200, help="images in the zero-shot and retrieval sets")
    p.add_argument("--t2i-scenes", type=positive_int, default=32, help="scenes in the text-to-image prompt set")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_mini_eval_data)


def cmd_mini_build(args) -> int:
    from altdiffusion.mini.build import Build
    from altdiffusion.mini.package import install, size_mb

    log = Build(
        Path(args.out),
        seed=args.seed,
        smoke=args.smoke,
        steps_scale=args.steps_scale,
        baseline=not args.no_baseline,
        scratch_segments=args.scratch_segments,
        grounding=args.grounding,
    )()
    print(f"built in {log['total_wall_s']:.0f} s: {log['outputs']}")
    if args.install:
        dest = install(
            Path(log["outputs"]["altclip"]), Path(log["outputs"]["altdiffusion"]), Path(args.out) / "build.json"
        )
        print(f"installed as the bundled model: {dest} ({size_mb(dest):.1f} MB)")
    return 0


def cmd_mini_report(args) -> int:
    from altdiffusion.mini.report import build_report, markdown, write_report

    report, samples = build_report(
        args.clip,
        args.model,
        scenes=args.scenes,
        seeds=args.seeds,
        guidance=args.guidance,
        build_log=Path(args.build_log) if args.build_log else None,
    )
    write_report(Path(args.out), report, samples)
    print(markdown(report))
    print(f"wrote {args.out}/report.json, report.md, {', '.join(samples)}")
    return 0


def cmd_mini_composition(args) -> int:
    import json
    import math

    from altdiffusion.errors import InvalidInputError
    from altdiffusion.mini import composition, evaluate, world

    languages = language_list(args.languages) or []
    unknown = sorted(set(languages) - set(world.LANGUAGES))
    if unknown or not languages:
        raise InvalidInputError(
            f"--languages: {', '.join(unknown) or 'none given'}; choose from {', '.join(world.LANGUAGES)}"
        )
    if not math.isfinite(args.guidance):
        raise InvalidInputError(f"--guidance must be a finite number, got {args.guidance}; the report's is 3")
    pipe = evaluate.load_mini_pipeline(args.model)
    pairs = evaluate.two_thing_scenes(n=args.scenes)
    diagnosed = {lang: composition.diagnose(pipe, pairs, lang, guidance=args.guidance) for lang in languages}
    found = {
        "role_probe": composition.role_probe(
            pipe.text_encoder, pipe.tokenizer, world.scenes_for_eval("seen", 600, 4242, 2)
        ),
        "guidance": args.guidance,
        **{check: {lang: diagnosed[lang][check] for lang in languages} for check in ("order_swap", "leakage")},
        "layout_probe": {
            lang: composition.layout_probes(pipe, evaluate.generation_scenes(n=args.scenes), pairs, lang)
            for lang in languages
        },
        "padding_attention": {lang: composition.padding_attention(pipe, pairs, lang) for lang in languages},
        "padding_order_signal": {lang: composition.padding_order_signal(pipe, pairs, lang) for lang in languages},
    }
    print(json.dumps(found, indent=2))
    return 0


def cmd_mini_data(args) -> int:
    from altdiffusion.mini.world import write_shards

    paths = write_shards(Path(args.out), args.n, args.seed, split=args.split, shard_size=args.shard_size)
    print(f"wrote {len(paths)} shards to {args.out}")
    return 0


def cmd_mini_eval_data(args) -> int:
    from altdiffusion.mini.eval_data import write_eval_data

    out = write_eval_data(args.out, seed=args.seed, n=args.n, t2i_scenes=args.t2i_scenes)
    print(f"wrote zeroshot-wds-*, zeroshot-folder, retrieval, retrieval-wds-*, t2i to {out}")
    return 0
