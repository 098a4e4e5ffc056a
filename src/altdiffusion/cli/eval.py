"""``altdiffusion eval ...``: benchmarks in clip_benchmark's formats (zero-shot, retrieval, text-to-image)."""

from __future__ import annotations

import argparse

from altdiffusion.cli.common import add_device_arguments, language_list, positive_int


def add_eval_parsers(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="evaluate AltCLIP / AltDiffusion on benchmark datasets").add_subparsers(
        dest="eval_command", required=True
    )
    p = ev.add_parser("zeroshot", help="zero-shot classification (top-1, top-5, mean per-class recall)")
    p.add_argument("--model", default="mini", help="AltCLIP: hub id, folder or mini")
    p.add_argument(
        "--dataset", required=True, help="clip_benchmark webdataset folder or image folder (a class a sub-folder)"
    )
    p.add_argument("--language", default="en", help="language of the class names and templates (default: en)")
    p.add_argument("--classnames", default=None, help="class names file (a name a line, or clip_benchmark's JSON)")
    p.add_argument("--templates", default=None, help="templates file, a template a line with {c} for the class name")
    _add_common(p)
    p.set_defaults(func=cmd_eval_zeroshot)

    p = ev.add_parser("retrieval", help="image<->text retrieval (R@1/5/10 both ways, mean recall), per language")
    p.add_argument("--model", default="mini", help="AltCLIP: hub id, folder or mini")
    p.add_argument("--dataset", required=True, help="clip_benchmark retrieval webdataset folder, or a .jsonl/.tsv")
    p.add_argument("--language", default="en", help="language of captions whose layout does not name one")
    p.add_argument("--languages", default=None, help="comma-separated languages to report (default: all present)")
    _add_common(p)
    p.set_defaults(func=cmd_eval_retrieval)

    p = ev.add_parser("t2i", help="generate a prompt set; CLIP score, FID/KID, cross-language consistency")
    p.add_argument("--model", default="mini", help="AltDiffusion: hub id, folder or mini")
    p.add_argument("--prompts", required=True, help=".txt (a prompt a line) or .jsonl ({id, en, zh, ...} a scene)")
    p.add_argument("--out", required=True, help="folder for the images (resumable) and the results")
    p.add_argument("--clip", default=None, help="CLIP for the scores (default: the AltCLIP of the model's family)")
    p.add_argument("--reference", default=None, help="folder of reference images for FID/KID")
    p.add_argument("--fid-features", default="inception", choices=["inception", "clip"])
    p.add_argument("--language", default="en", help="language of a .txt prompt file")
    p.add_argument("--languages", default=None, help="comma-separated languages to generate (default: all)")
    p.add_argument("--samples", type=positive_int, default=1, help="images per prompt (MG-18: 10)")
    p.add_argument("--seed", type=int, default=0, help="first seed (MG-18: 54551)")
    p.add_argument("--steps", type=positive_int, default=None)
    p.add_argument("--cfg-scale", type=float, default=None)
    p.add_argument("--size", type=positive_int, default=None, help="width and height (default: the model's)")
    p.add_argument("--sampler", default=None, help="A1111 sampler name, e.g. DDIM (default: the model's)")
    _add_common(p, batch=8)
    p.set_defaults(func=cmd_eval_t2i)


def _add_common(p: argparse.ArgumentParser, batch: int = 64) -> None:
    p.add_argument("--batch-size", type=positive_int, default=batch)
    p.add_argument("--results", default="eval-results", help="folder for the JSON files and results.md")
    p.add_argument("--cache-dir", default=None, help="embedding cache (default: ~/.cache/altdiffusion/eval)")
    p.add_argument("--no-cache", action="store_true", help="embed everything again, store nothing")
    add_device_arguments(p)


def _report(results, folder) -> int:
    from altdiffusion.eval import markdown, write_results

    if results:  # under `accelerate launch` only the main process has results
        paths = write_results(results, folder)
        print(markdown(results), end="")
        for result in results:
            for reason, count in result.skipped.items():
                print(f"warning: {result.dataset}: skipped {count} sample(s): {reason}")
        print(f"wrote {len(paths) - 1} result file(s) and results.md to {folder}")
    return 0


def _device(args) -> dict:
    from altdiffusion.eval.embeddings import default_cache_dir

    cache_dir = None if args.no_cache else args.cache_dir or default_cache_dir()
    return {"device": args.device, "dtype": args.dtype, "cache_dir": cache_dir}


def cmd_eval_zeroshot(args) -> int:
    from altdiffusion.eval import zeroshot

    result = zeroshot(
        args.model,
        args.dataset,
        language=args.language,
        classnames=args.classnames,
        templates=args.templates,
        batch_size=args.batch_size,
        **_device(args),
    )
    return _report([result], args.results)


def cmd_eval_retrieval(args) -> int:
    from altdiffusion.eval import retrieval

    results = retrieval(
        args.model,
        args.dataset,
        languages=language_list(args.languages),
        language=args.language,
        batch_size=args.batch_size,
        **_device(args),
    )
    return _report(results, args.results)


def cmd_eval_t2i(args) -> int:
    from altdiffusion.eval import t2i

    generation = {"num_inference_steps": args.steps, "guidance_scale": args.cfg_scale, "sampler": args.sampler}
    if args.size:
        generation.update(width=args.size, height=args.size)
    results = t2i(
        args.model,
        args.prompts,
        out=args.out,
        clip=args.clip,
        reference=args.reference,
        languages=language_list(args.languages),
        language=args.language,
        samples=args.samples,
        seed=args.seed,
        batch_size=args.batch_size,
        fid_features=args.fid_features,
        generation=generation,
        **_device(args),
    )
    return _report(results, args.results)
