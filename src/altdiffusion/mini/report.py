"""`altdiffusion mini report`: how well the mini recipe worked, per language, on the given weights.

Writes ``report.json``, ``report.md`` (the tables in the README), ``samples.png`` and
``samples-two.png`` (one row per language, the same one-thing / two-thing scenes and seeds in each
column) and, when the build log has the from-scratch baseline, ``scratch-curve.png``; prints the
Markdown.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from altdiffusion.devices import describe_device
from altdiffusion.mini import GUIDANCE, REPORT_SCENES, SAMPLER, evaluate, world
from altdiffusion.mini.plots import sample_grid, scratch_curve_plot

MINIMUMS = {"en_generation_seen": 0.80, "gap_to_en": 0.05, "zero_shot": 0.95, "seconds_per_image": 1.0}


def speed(pipe, repeats: int = 5) -> float:
    """Median seconds for one 64x64 image at 20 steps (text encoding and decoding included)."""
    settings = dict(num_inference_steps=20, height=64, width=64, sampler=SAMPLER, progress=False)
    pipe("warm up", seed=0, **settings)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        pipe("一个红色的大圆形在中间，白色背景", seed=i, **settings)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build_report(
    clip_model="mini",
    diffusion_model="mini",
    *,
    scenes: int = REPORT_SCENES,
    seeds: int = 2,
    seed: int = 0,
    guidance: float = GUIDANCE,
    build_log: Path | None = None,
) -> tuple[dict, dict]:
    import torch

    from altdiffusion.clip import load_clip

    torch.manual_seed(0)
    clip = load_clip(clip_model, dtype="fp32")
    pipe = evaluate.load_mini_pipeline(diffusion_model)
    seen = evaluate.generation_scenes(seed, scenes)
    held_out = evaluate.held_out_scenes(seed, scenes)
    pairs = evaluate.two_thing_scenes(seed, scenes // 2)
    rows, verdicts, failures, two = {}, {}, {}, {}
    samples = {"samples.png": {}, "samples-two.png": {}}
    for lang in world.LANGUAGES:
        zs = evaluate.zero_shot(clip, lang, seed=seed)
        v_seen, images, failures[lang] = evaluate.generate_verdicts(pipe, seen, lang, seeds, guidance=guidance)
        v_held, _, _ = evaluate.generate_verdicts(pipe, held_out, lang, seeds, guidance=guidance)
        v_pairs, pair_images, pair_failures = evaluate.generate_verdicts(pipe, pairs, lang, 1, guidance=guidance)
        v_reworded, _, _ = evaluate.generate_verdicts(pipe, pairs, lang, 1, guidance=guidance, template=1)
        verdicts[lang] = v_seen + v_held
        two[lang] = two_thing_breakdown(pairs, v_pairs, pair_failures, v_reworded)
        samples["samples.png"][lang] = _first_seed(images, len(seen))
        samples["samples-two.png"][lang] = _first_seed(pair_images, len(pairs))
        rows[lang] = {
            "zero_shot_colour": zs["colour"],
            "zero_shot_shape": zs["shape"],
            "retrieval_r1": evaluate.retrieval_r1(clip, lang, seed=seed),
            "generation_seen": evaluate.accuracy(v_seen),
            "generation_held_out": evaluate.accuracy(v_held),
            "generation_two_things": evaluate.accuracy(v_pairs),
        }
        print(f"[mini report] {lang}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[lang].items()), flush=True)
    for lang in world.LANGUAGES:
        rows[lang]["consistency_with_en"] = evaluate.agreement(verdicts["en"], verdicts[lang])

    report = {
        "models": {"clip": str(clip_model), "diffusion": str(diffusion_model)},
        "settings": _settings(scenes, seeds, guidance),
        "languages": rows,
        "failures_seen": failures,
        "two_things": two,
        "vae_ceiling": vae_ceiling(pipe.vae, seen, pairs, seed),
        "seconds_per_image": speed(pipe),
        "device": describe_device(pipe.device),
        "compute": compute_summary(_read_build_log(build_log)),
        "minimums": check_minimums(rows),
    }
    report["minimums"]["seconds_per_image"] = report["seconds_per_image"] <= MINIMUMS["seconds_per_image"]
    return report, samples


def _settings(scenes: int, seeds: int, guidance: float) -> dict:
    return {
        "scenes": scenes,
        "seeds": seeds,
        "steps": 20,
        "guidance": guidance,
        "size": 64,
        "sampler": SAMPLER,
    }


def _first_seed(images: dict, n_scenes: int, columns: int = 8) -> list:
    """A sample sheet's row: the first ``columns`` scenes' images of seed 0."""
    return [images[(i, 0)] for i in range(min(columns, n_scenes))]


def vae_ceiling(vae, one_thing, two_things, seed: int) -> dict[str, float]:
    """The share of the report's one- and two-thing scenes the checker passes after the VAE alone."""
    return {
        name: evaluate.accuracy(evaluate.reconstruction_verdicts(vae, scenes, evaluate.EVAL_SEED + seed))
        for name, scenes in (("one_thing", one_thing), ("two_things", two_things))
    }


def two_thing_breakdown(scenes, verdicts, failures: dict[str, int], reworded) -> dict:
    """Two-thing accuracy per relation and how many images had each attribute wrong, both with the
    captions of template 0; and the accuracy on the same scenes and seeds captioned with template 1
    (the second thing named first: "On a white background there is a large blue square, and to the
    left of it a small red circle.")."""
    by_relation = {}
    for relation in world.RELATIONS:
        rows = [v for s, v in zip(scenes, verdicts) if s.relation == relation]
        by_relation[relation] = evaluate.accuracy(rows) if rows else None
    return {
        "n": len(scenes),
        "by_relation": by_relation,
        "wrong": dict(failures),
        "template_1": evaluate.accuracy(reworded),
    }


def _read_build_log(path: Path | None) -> dict | None:
    """The build's log (default: the bundled model's), or None when there is none."""
    from altdiffusion.hub import bundled_model_dir

    path = path or (bundled_model_dir("diffusion").parent / "build.json")
    return json.loads(path.read_text()) if path.is_file() else None


def compute_summary(build: dict | None) -> dict | None:
    """Teacher learning + contrastive learning vs a multilingual CLIP from scratch (CPU seconds)."""
    if not build or "stages" not in build:
        return None
    stages = build["stages"]
    alt = stages.get("distill", {}).get("cpu_s", 0) + stages.get("altclip", {}).get("cpu_s", 0)
    out = {
        "teacher_cpu_s": stages.get("teacher", {}).get("cpu_s"),
        "altclip_cpu_s": round(alt, 1),
        "recipe_wall_s": build.get("recipe_wall_s"),
        "stages": stages,
    }
    scratch = build.get("scratch")
    if scratch:
        out.update(
            target_zh_r1=scratch["target_zh_r1"],
            scratch_curve=scratch["curve"],
            scratch_reached=bool(scratch.get("reached")),
            scratch_plateaued=bool(scratch.get("plateaued")),
        )
        last = scratch["curve"][-1]
        out["scratch_cpu_s"] = round(last["cpu_s"], 1)
        # Both ways the paper's "1%" can be read: the teacher's cost not counted (it exists
        # already, as OpenAI's CLIP does) and counted. A baseline that stopped short only bounds
        # each ratio from above.
        for key, cost in (
            ("altclip_over_scratch", alt),
            ("with_teacher_over_scratch", alt + (out["teacher_cpu_s"] or 0)),
        ):
            ratio = round(cost / last["cpu_s"], 3) if last["cpu_s"] else None
            out[key] = ratio if scratch.get("reached") else None
            out[f"{key}_below"] = None if scratch.get("reached") else ratio
    return out


def check_minimums(rows: dict) -> dict:
    en = rows["en"]["generation_seen"]
    return {
        "en_generation_seen>=0.80": en >= MINIMUMS["en_generation_seen"],
        "every_language_within_5_points": all(
            en - r["generation_seen"] <= MINIMUMS["gap_to_en"] + 1e-9 for r in rows.values()
        ),
        "zero_shot_colour_shape>=0.95": all(
            min(r["zero_shot_colour"], r["zero_shot_shape"]) >= MINIMUMS["zero_shot"] for r in rows.values()
        ),
    }


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown(report: dict) -> str:
    s = report["settings"]
    lines = [
        "| language | zero-shot colour % | zero-shot shape % | text→image R@1 % | generation, seen % | generation, held-out % "
        "| two things % | agrees with en % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for lang, r in report["languages"].items():
        lines.append(
            f"| {lang} | {pct(r['zero_shot_colour'])} | {pct(r['zero_shot_shape'])} | {pct(r['retrieval_r1'])} | "
            f"{pct(r['generation_seen'])} | {pct(r['generation_held_out'])} | {pct(r['generation_two_things'])} | "
            f"{pct(r['consistency_with_en'])} |"
        )
    lines += [
        "",
        f"Generation: {s['scenes']} one-thing scenes x {s['seeds']} seeds per split and language "
        f"({s['scenes'] // 2} two-thing scenes x 1 seed), {s['steps']} steps, CFG {s['guidance']}, {s['size']} px, "
        f"{s['sampler']}; a sample counts only if the checker finds every attribute right.",
        f"One 64x64 image, 20 steps, on {report['device']}: {report['seconds_per_image']:.2f} s (median of 5).",
    ]
    failures = report.get("failures_seen")
    if failures:
        n = s["scenes"] * s["seeds"]
        per_lang = "; ".join(
            f"{lang} " + ", ".join(f"{a} {k}" for a, k in sorted(f.items(), key=lambda x: -x[1]) if k)
            for lang, f in failures.items()
        )
        lines.append(f"Wrong attributes among the {n} seen-split images per language: {per_lang}.")
    if report.get("compute"):
        lines.append(compute_markdown(report["compute"]))
    ceiling = report.get("vae_ceiling")
    if ceiling:
        lines.append(
            f"Through the VAE alone (encode, decode) the checker still passes {pct(ceiling['one_thing'])}% of the "
            f"one-thing scenes' renders and {pct(ceiling['two_things'])}% of the two-thing scenes': "
            "no UNet drawing through this VAE can do better."
        )
    lines += two_thing_markdown(report.get("two_things"))
    lines.append("Minimums: " + ", ".join(f"{k} {'✓' if v else '✗'}" for k, v in report["minimums"].items()))
    return "\n".join(lines) + "\n"


def compute_markdown(c: dict) -> str:
    """The compute comparison in one line: teacher, AltCLIP-mini, and the from-scratch baseline."""
    text = f"Compute (CPU seconds): English teacher {c['teacher_cpu_s']}; AltCLIP-mini teacher learning + contrastive {c['altclip_cpu_s']}"
    if "target_zh_r1" in c:
        target = f"the same Chinese R@1 ({pct(c['target_zh_r1'])}%)"
        text += "; multilingual CLIP from scratch " + (
            f"reached {target} after {c['scratch_cpu_s']}"
            if c["scratch_reached"]
            else f"had not reached {target} after {c['scratch_cpu_s']}"
        )
        last = c["scratch_curve"][-1]
        text += f" (its Chinese R@1 was then {pct(last['zh_r1'])}%)"
        if c["scratch_reached"]:
            text += (
                f"; AltCLIP-mini / from scratch = {c['altclip_over_scratch']} "
                f"({c.get('with_teacher_over_scratch')} with the teacher's cost counted)"
            )
        elif c.get("altclip_over_scratch_below"):
            why = (
                "the baseline plateaued below the target"
                if c.get("scratch_plateaued")
                else "the baseline stopped short"
            )
            text += (
                f"; AltCLIP-mini / from scratch < {c['altclip_over_scratch_below']} "
                f"(< {c.get('with_teacher_over_scratch_below')} with the teacher's cost counted; bounds: {why})"
            )
    return text + "."


def two_thing_markdown(two: dict | None) -> list[str]:
    """The two-thing table: accuracy per relation and wrong attributes, per language."""
    if not two:
        return []
    attributes = sorted({a for row in two.values() for a in row["wrong"]})
    relations = list(next(iter(two.values()))["by_relation"])
    head = ["language"] + [f"{r.replace('_', ' ')} %" for r in relations] + ["template 1 %"]
    head += [f"wrong {a}" for a in attributes]
    lines = ["", "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for lang, row in two.items():
        cells = [pct(row["by_relation"][r]) if row["by_relation"][r] is not None else "" for r in relations]
        cells += [pct(row["template_1"])] + [str(row["wrong"].get(a, 0)) for a in attributes]
        lines.append(f"| {lang} | " + " | ".join(cells) + " |")
    n = next(iter(two.values()))["n"]
    lines += [
        "",
        f"Two-thing scenes: {n} per language, 1 seed. Per relation and 'wrong X' (images with attribute X wrong): "
        'the captions of template 0, as in the first table (English: "A small red circle to the left of a large '
        "blue square, on a white background.\"); 'template 1': the same scenes and seeds worded with the second "
        'thing first ("On a white background there is a large blue square, and to the left of it a small red '
        'circle.").',
        "",
    ]
    return lines


def write_report(out: Path, report: dict, samples) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (out / "report.md").write_text(markdown(report))
    for name, sheet in samples.items():
        sample_grid(sheet).save(out / name)
    compute = report.get("compute") or {}
    if compute.get("scratch_curve"):
        scratch_curve_plot(compute).save(out / "scratch-curve.png")
