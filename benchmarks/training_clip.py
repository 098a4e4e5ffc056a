#!/usr/bin/env python
"""AltCLIP training throughput: teacher learning (distill) and contrastive learning on CPU.

Each configuration (size, task, precision) runs in a fresh worker subprocess (``--worker``)
that builds its task, then calls the shared loop ``altdiffusion.training.loop.train`` for
``warm-up + timed`` optimizer steps with ``log_every=1``. The loop's ``log.jsonl`` gives the
time of every optimizer step (``batch / samples_per_s``: fetching the batch — tokenising,
the frozen teacher's forward or image decoding — forward, backward, gradient clipping, AdamW
and the LR schedule); the warm-up steps are dropped and the rest give samples/s. Set-up
(building models, ``accelerator.prepare``) and the export at the end are not timed.

Memory, per worker (Linux):

- ``peak RSS (process)``: ``ru_maxrss`` of the worker at the end of training: building the
  models included;
- ``RSS before``: the RSS right before ``train()`` (models built, garbage trimmed);
- ``peak RSS (training)``: the peak RSS from ``train()``'s start until its last step ends
  (the kernel's peak counter is reset with ``/proc/self/clear_refs`` before ``train()`` and
  read in the export hook, before anything is exported);
- ``+RSS``: ``peak RSS (training) - RSS before`` — gradients, AdamW state, activations,
  autocast weight copies.

Configurations:

- ``tiny``: the training tests' world (``tests/training``): teacher
  ``write_tiny_clip(width=64, layers=1)``, student ``write_tiny_xlmr(width=64, layers=2)``,
  the en-zh scene grammar (TSV for teacher learning, 32 px webdataset shards for contrastive
  learning on an AltCLIP exported from the untrained student); batch 32, 5 warm-up + 50 timed
  steps, fp32 and bf16 mixed precision.
- ``full``: random weights at published sizes. Student: XLM-R large (24 layers, hidden 1024,
  16 heads, FFN 4096, vocab 250,002, 514 positions) with AltCLIP's head, built in memory the
  way ``build_student`` builds it, with the real XLM-R tokenizer. Teacher: a ``CLIPModel``
  folder whose text tower has CLIP ViT-L/14's dimensions (hidden 768, 12 layers, 12 heads,
  FFN 3072, vocab 49,408, 77 positions) and a minimal vision tower (unused by teacher
  learning), loaded by ``Teacher``; its tokenizer is word-level over the captions. Captions
  join two grammar scenes (about 16-24 tokens). Batch 8, 3 warm-up + 5 timed steps, bf16
  mixed precision and fp32. The export (a 2.3 GB AltCLIP) is skipped. Contrastive learning at
  full size (XLM-R large + a frozen ViT-L/14 at 224 px; text padded to 77 tokens) is measured
  only with ``--full-contrastive`` (see README for why).

Usage::

    python benchmarks/training_clip.py                 # everything (~8-12 min on 2 cores)
    python benchmarks/training_clip.py --only tiny     # about 2 minutes
    python benchmarks/training_clip.py --only full --precisions bf16 --steps 3 --batch 4

Results: ``benchmarks/results/training-clip-<date>.json`` and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fullsize import XLMR_LARGE
from procinfo import cpu_name, gib, mib, reset_peak_rss, status_kib, trim_heap

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
sys.path.append(str(ROOT))  # the tests package: tests.training.grammar is the training tests' data

PRECISIONS = {"fp32": "no", "bf16": "bf16"}
DEFAULTS = {  # size -> (batch, warm-up steps, timed steps)
    "tiny": (32, 5, 50),
    "full": (8, 3, 5),
}


# openai/clip-vit-large-patch14 text_config.
CLIP_L14_TEXT = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "vocab_size": 49408,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-05,
    "projection_dim": 768,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 2,
}

# openai/clip-vit-large-patch14 vision_config.
CLIP_L14_VISION = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "num_hidden_layers": 24,
    "image_size": 224,
    "patch_size": 14,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-05,
    "projection_dim": 768,
}

# What teacher learning does not use: the smallest vision tower CLIPModel accepts, in effect.
MINIMAL_VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 1,
    "image_size": 32,
    "patch_size": 8,
}


FULL_CONTRASTIVE_WHY = (
    "off by default (--full-contrastive): a step runs a frozen ViT-L/14 at 224 px over the batch plus XLM-R large "
    "forward+backward at 77 tokens (about 5x the compute of a full-size distill step at batch 8); a smoke run at "
    "batch 2 (1 warm-up + 1 timed step, bf16, 2 loaded cores) already took ~50 s/step and ~3 min in all, so "
    "3 warm-up + 5 timed steps at batch 8 do not fit the ~3 minutes budgeted"
)


# ---------------------------------------------------------------------------------------------
# data and model folders (driver)


def _long_captions(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(english, chinese) captions joining two scenes of the grammar: ~16-24 tokens each."""
    from tests.training import grammar

    rng = random.Random(seed)
    scenes = grammar.scenes()
    out = []
    for _ in range(n):
        parts = rng.sample(scenes, 2)
        variants = [rng.randint(0, 1) for _ in parts]
        en = ", and ".join(grammar.english(*s, variant=v) for s, v in zip(parts, variants))
        zh = "，".join(grammar.chinese(*s, variant=v) for s, v in zip(parts, variants))
        out.append((en, zh))
    return out


def _write_shards(folder: Path, items: list[tuple[tuple, str, str]], px: int, per_shard: int = 200) -> Path:
    """Webdataset shards in img2dataset's layout: ``jpg`` + ``json`` with en/zh captions."""
    import io

    import webdataset as wds

    from tests.training import grammar

    folder.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(items), per_shard):
        shard = start // per_shard
        with wds.TarWriter(str(folder / f"{shard:05d}.tar")) as writer:
            for i, (scene, en, zh) in enumerate(items[start : start + per_shard]):
                buf = io.BytesIO()
                grammar.render(*scene, px=px).save(buf, format="JPEG", quality=90)
                caps = json.dumps({"captions": {"en": en, "zh": zh}}, ensure_ascii=False)
                writer.write({"__key__": f"{shard:05d}{i:04d}", "jpg": buf.getvalue(), "json": caps})
    return folder


def prepare_tiny(root: Path) -> dict:
    """The training tests' world, plus an AltCLIP exported from the untrained student."""
    from altdiffusion.models.tiny_distillation import write_tiny_clip, write_tiny_xlmr
    from altdiffusion.training.distill import build_student
    from altdiffusion.training.teacher import Teacher, export_altclip
    from tests.training import grammar

    corpus = grammar.corpus()
    write_tiny_clip(root / "teacher", corpus, seed=0, width=64, layers=1)
    write_tiny_xlmr(root / "student", corpus, seed=0, width=64, layers=2)
    train_scenes, _ = grammar.split()
    grammar.write_tsv(root / "train.tsv", train_scenes)
    grammar.write_shards(root / "shards", train_scenes, per_shard=150)
    teacher = Teacher(root / "teacher")
    student, tokenizer = build_student(root / "student", teacher.width)
    export_altclip(student, tokenizer, teacher, root / "altclip")
    return {
        "teacher": str(root / "teacher"),
        "student": str(root / "student"),
        "data": str(root / "train.tsv"),
        "shards": str(root / "shards"),
        "altclip": str(root / "altclip"),
    }


def prepare_full(root: Path, contrastive: bool) -> dict:
    """Captions (TSV), the teacher folder (CLIP ViT-L/14 text dims), shards for contrastive."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from altdiffusion.models.tiny_distillation import write_tiny_clip

    captions = _long_captions(2000)
    data = root / "captions.tsv"
    data.write_text("".join(f"{en}\t{zh}\n" for en, zh in captions), encoding="utf-8")
    teacher = root / "teacher"
    # The word-level tokenizer (and preprocessor config) of the test teacher, over these captions;
    # then the model files are replaced by a CLIPModel with ViT-L/14's text tower.
    write_tiny_clip(teacher, [c for pair in captions for c in pair[:1]], width=32, layers=1)
    torch.manual_seed(0)
    config = CLIPConfig(text_config=dict(CLIP_L14_TEXT), vision_config=dict(MINIMAL_VISION), projection_dim=768)
    CLIPModel(config).save_pretrained(str(teacher))  # safetensors, ~0.5 GB
    out = {"teacher": str(teacher), "data": str(data)}
    if contrastive:
        from tests.training import grammar

        rng = random.Random(1)
        items = []
        for en, zh in captions[:200]:
            items.append((rng.choice(grammar.scenes()), en, zh))
        out["shards"] = str(_write_shards(root / "shards", items, px=256))
        out["altclip"] = str(_write_full_altclip_folder(root / "altclip"))
    return out


# ---------------------------------------------------------------------------------------------
# worker: build one task, train, report


def _full_student(width: int):
    """XLM-R large with AltCLIP's head, random weights: what build_student makes of an XLM-R
    folder (dropout 0, project_dim = teacher width, head initialised from the seed)."""
    import torch

    from altdiffusion.models.text_encoder import AltTextEncoder, text_config_from_dict

    torch.manual_seed(0)
    config = text_config_from_dict({**XLMR_LARGE, "project_dim": width})
    student = AltTextEncoder(config, head="clip")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        bound = 1 / config.hidden_size**0.5
        student.transformation.weight.uniform_(-bound, bound, generator=generator)
        student.transformation.bias.uniform_(-bound, bound, generator=generator)
    return student


def _full_altclip_config() -> dict:
    """AltCLIP (BAAI/AltCLIP's sizes): XLM-R large text tower + CLIP ViT-L/14 image tower."""
    text = {**XLMR_LARGE, "project_dim": 768, "model_type": "altclip_text_model"}
    vision = {k: v for k, v in CLIP_L14_VISION.items() if k != "projection_dim"}
    vision["model_type"] = "altclip_vision_model"
    return {
        "architectures": ["AltCLIPModel"],
        "model_type": "altclip",
        "projection_dim": 768,
        "logit_scale_init_value": 2.6592,
        "text_config": text,
        "vision_config": vision,
    }


def _write_full_altclip_folder(folder: Path) -> Path:
    """An AltCLIP folder without weights (config, real XLM-R tokenizer, 224 px preprocessor):
    the worker builds the random model in memory instead of reading 3.5 GB."""
    from tests.xlmr_tokenizer import real_xlmr_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(_full_altclip_config(), indent=2) + "\n")
    real_xlmr_tokenizer().save_pretrained(str(folder))
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "crop_size": {"height": 224, "width": 224},
                "do_center_crop": True,
                "do_convert_rgb": True,
                "do_normalize": True,
                "do_resize": True,
                "image_processor_type": "CLIPImageProcessor",
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
                "resample": 3,
                "size": {"shortest_edge": 224},
            },
            indent=2,
        )
        + "\n"
    )
    return folder


def _full_contrastive_task(folder: str, shards: str):
    """ContrastiveTask(folder, shards) with ``load_altclip`` swapped for a random in-memory build."""
    import torch
    from transformers import AltCLIPConfig

    import altdiffusion.models.loading as loading
    from altdiffusion.models.altclip import AltCLIP
    from altdiffusion.training.contrastive import ContrastiveTask

    def random_altclip(path):
        torch.manual_seed(0)
        return AltCLIP(AltCLIPConfig.from_dict(json.loads((Path(path) / "config.json").read_text()))).eval()

    original = loading.load_altclip
    loading.load_altclip = random_altclip
    try:
        return ContrastiveTask(Path(folder), shards, seed=0)
    finally:
        loading.load_altclip = original


def _build_task(spec: dict):
    from altdiffusion.training.data import read_parallel_text

    if spec["task"] == "distill":
        from altdiffusion.training.distill import DistillTask, build_student
        from altdiffusion.training.teacher import Teacher

        teacher = Teacher(spec["teacher"])
        if spec["size"] == "tiny":
            student, tokenizer = build_student(spec["student"], teacher.width)
        else:
            from tests.xlmr_tokenizer import real_xlmr_tokenizer

            student, tokenizer = _full_student(teacher.width), real_xlmr_tokenizer()
        pairs = read_parallel_text([spec["data"]])
        return DistillTask(teacher, student, tokenizer, pairs, loss="mse")
    if spec["size"] == "tiny":
        from altdiffusion.training.contrastive import ContrastiveTask

        return ContrastiveTask(Path(spec["altclip"]), spec["shards"], seed=0)
    return _full_contrastive_task(spec["altclip"], spec["shards"])


def _sequence_lengths(task, spec: dict) -> dict:
    """Padded token counts of the timed steps' batches (the streams are deterministic)."""
    batch, warmup, steps = spec["batch"], spec["warmup"], spec["steps"]
    stream = task.batches(0, batch, 0, 1, 1)
    student, teacher = [], []
    for step in range(warmup + steps):
        b = next(stream)
        if step < warmup:
            continue
        if spec["task"] == "distill":
            student.append(
                task.tokenizer(
                    [s for s, _ in b], padding=True, truncation=True, max_length=task.max_length, return_tensors="pt"
                ).input_ids.shape[1]
            )
            teacher.append(
                task.teacher.tokenizer(
                    [t for _, t in b],
                    padding=True,
                    truncation=True,
                    max_length=task.teacher.max_length,
                    return_tensors="pt",
                ).input_ids.shape[1]
            )
        else:
            student.append(b[0].shape[1])
    out = {
        "student_tokens_mean": round(statistics.fmean(student), 1),
        "student_tokens_range": [min(student), max(student)],
    }
    if teacher:
        out.update(
            teacher_tokens_mean=round(statistics.fmean(teacher), 1), teacher_tokens_range=[min(teacher), max(teacher)]
        )
    return out


def run_worker(args) -> None:
    import torch

    spec = json.loads(args.spec)
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    import transformers

    transformers.utils.logging.set_verbosity_error()
    from altdiffusion.training.loop import train
    from altdiffusion.training.params import TrainSettings

    rss_after_import = status_kib("VmRSS")
    t0 = time.perf_counter()
    task = _build_task(spec)
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in task.model.parameters())
    n_trainable = sum(p.numel() for p in task.model.parameters() if p.requires_grad)

    end_of_training: dict = {}
    real_export = task.export

    def export(model, folder: Path) -> None:  # the loop calls this right after its last step
        end_of_training.update(t=time.perf_counter(), hwm=status_kib("VmHWM"), rss=status_kib("VmRSS"))
        if spec["export"]:
            real_export(model, folder)
        else:
            folder.mkdir(parents=True, exist_ok=True)  # the loop renames it into place

    task.export = export
    out = Path(spec["workdir"]) / "run"
    total = spec["warmup"] + spec["steps"]
    settings = TrainSettings(
        output_dir=out,
        steps=total,
        batch_size=spec["batch"],
        lr=1e-5,
        warmup_steps=0,
        lr_schedule="constant",
        mixed_precision=PRECISIONS[spec["precision"]],
        save_every=10**9,
        log_every=1,
        seed=0,
        tensorboard=False,
        progress=False,
    )
    gc.collect()
    trim_heap()
    build_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_before = status_kib("VmRSS")
    reset_ok = reset_peak_rss()
    t_train = time.perf_counter()
    cpu_train = time.process_time()
    train(task, settings)
    cpu_train = time.process_time() - cpu_train
    train_s = end_of_training["t"] - t_train
    export_s = time.perf_counter() - end_of_training["t"]
    process_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # includes the export, if any
    peak_training = end_of_training["hwm"] if reset_ok else process_peak

    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    step_s = [spec["batch"] / r["samples_per_s"] for r in log]
    timed = step_s[spec["warmup"] :]
    losses = [r["loss"] for r in log]
    report = {
        **{k: spec[k] for k in ("size", "task", "precision", "batch", "warmup", "steps")},
        "torch_threads": torch.get_num_threads(),
        "params": n_params,
        "trainable_params": n_trainable,
        "build_s": round(build_s, 2),
        "train_call_s": round(train_s, 2),
        "export_s": round(export_s, 2),
        "exported": spec["export"],
        "cpu_s_train_call": round(cpu_train, 2),
        "step_seconds": [round(x, 4) for x in step_s],
        "samples_per_s": round(spec["batch"] * len(timed) / sum(timed), 3),
        "step_seconds_median": round(statistics.median(timed), 4),
        "step_seconds_min": round(min(timed), 4),
        "warmup_step_seconds": [round(x, 4) for x in step_s[: spec["warmup"]]],
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "losses_finite": all(map(lambda x: x == x and abs(x) != float("inf"), losses)),
        "rss_after_import_mib": mib(rss_after_import),
        "peak_rss_build_mib": mib(build_peak),
        "rss_before_training_mib": mib(rss_before),
        "peak_rss_training_mib": mib(peak_training),
        "rss_increase_training_mib": mib(peak_training - rss_before),
        "rss_end_of_training_mib": mib(end_of_training["rss"]),
        "peak_rss_process_mib": mib(max(build_peak, peak_training)),
        "peak_rss_process_incl_export_mib": mib(process_peak),
        "peak_reset": reset_ok,
    }
    if spec["task"] == "contrastive":
        report["skipped_samples"] = task.skipped.total
    report.update(_sequence_lengths(task, spec))
    Path(spec["result"]).write_text(json.dumps(report, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# driver


def _spawn(spec: dict, timeout: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--spec", json.dumps(spec)]
    load_before = os.getloadavg()
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-5000:] + proc.stderr[-5000:])
        raise SystemExit(
            f"worker {spec['size']}/{spec['task']}/{spec['precision']} failed with exit code {proc.returncode}"
        )
    report = json.loads(Path(spec["result"]).read_text())
    report.update(
        process_wall_s=round(wall, 1),
        loadavg_before=[round(x, 2) for x in load_before],
        loadavg_after=[round(x, 2) for x in os.getloadavg()],
    )
    print(
        f"  {spec['size']} {spec['task']} {spec['precision']}: {report['samples_per_s']:.2f} samples/s "
        f"({report['step_seconds_median']:.3f} s/step median of {spec['steps']}), peak RSS "
        f"{gib(report['peak_rss_process_mib'])} (training +{gib(report['rss_increase_training_mib'])}), "
        f"process {wall:.0f} s, load {load_before[0]:.1f}",
        file=sys.stderr,
        flush=True,
    )
    return report


def _tokens(r: dict) -> str:
    s = f"{r['student_tokens_mean']:.0f}"
    if "teacher_tokens_mean" in r:
        s += f" / {r['teacher_tokens_mean']:.0f}"
    return s


def _markdown(runs: list[dict]) -> str:
    lines = [
        "| size | task | precision | batch | timed steps | tokens (student / teacher) | samples/s | s/step median (min) "
        "| peak RSS (process) | RSS before training | peak RSS (training) | +RSS (training) | loss first → last | load avg |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['size']} | {r['task']} | {r['precision']} | {r['batch']} | {r['steps']} (+{r['warmup']} warm-up) "
            f"| {_tokens(r)} | {r['samples_per_s']:.2f} | {r['step_seconds_median']:.3f} ({r['step_seconds_min']:.3f}) "
            f"| {gib(r['peak_rss_process_mib'])} | {gib(r['rss_before_training_mib'])} "
            f"| {gib(r['peak_rss_training_mib'])} | {gib(r['rss_increase_training_mib'])} "
            f"| {r['loss_first']:.4g} → {r['loss_last']:.4g} | {r['loadavg_before'][0]:.1f}-{r['loadavg_after'][0]:.1f} |"
        )
    return "\n".join(lines)


def run_driver(args) -> None:
    import accelerate
    import torch
    import transformers

    sizes = ["tiny", "full"] if args.only == "all" else [args.only]
    wanted = [t.strip() for t in args.tasks.split(",") if t.strip()]
    for t in wanted:
        if t not in ("distill", "contrastive"):
            raise SystemExit(f"unknown task {t!r}; use distill and/or contrastive")
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    for p in precisions:
        if p not in PRECISIONS:
            raise SystemExit(f"unknown precision {p!r}; use fp32 and/or bf16")
    started = dt.datetime.now()
    workdir = Path(tempfile.mkdtemp(prefix="altdiffusion-train-bench-"))
    runs, not_measured = [], []
    try:
        for size in sizes:
            batch, warmup, steps = DEFAULTS[size]
            batch = args.batch or batch
            steps = args.steps or steps
            warmup = args.warmup if args.warmup is not None else warmup
            root = workdir / size
            root.mkdir()
            t = time.perf_counter()
            contrastive = "contrastive" in wanted and (size == "tiny" or args.full_contrastive)
            paths = prepare_tiny(root) if size == "tiny" else prepare_full(root, contrastive)
            print(f"{size}: prepared in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
            tasks = [t for t in ("distill", "contrastive") if t in wanted and (t == "distill" or contrastive)]
            if "contrastive" in wanted and not contrastive:
                not_measured.append({"size": size, "task": "contrastive", "why": FULL_CONTRASTIVE_WHY})
            # full size: bf16 first, so that a time limit still leaves the main number
            order = precisions if size == "tiny" else sorted(precisions, key=lambda p: p != "bf16")
            for task in tasks:
                for precision in order:
                    tag = f"{size}-{task}-{precision}"
                    spec = {
                        **paths,
                        "size": size,
                        "task": task,
                        "precision": precision,
                        "batch": batch,
                        "warmup": warmup,
                        "steps": steps,
                        "threads": args.tiny_threads if size == "tiny" else args.threads,
                        "export": size == "tiny",
                        "workdir": str(workdir / tag),
                        "result": str(workdir / f"{tag}.json"),
                    }
                    runs.append(_spawn(spec, args.worker_timeout))
                    shutil.rmtree(workdir / tag, ignore_errors=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    table = _markdown(runs)
    result = {
        "benchmark": "AltCLIP training throughput (teacher learning and contrastive learning), CPU",
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "accelerate": accelerate.__version__,
            "cpu": cpu_name(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
        },
        "settings": {
            "defaults": {k: {"batch": v[0], "warmup": v[1], "steps": v[2]} for k, v in DEFAULTS.items()},
            "overrides": {
                "batch": args.batch,
                "steps": args.steps,
                "warmup": args.warmup,
                "threads": {"tiny": args.tiny_threads or "default", "full": args.threads or "default"},
            },
            "precisions": precisions,
            "optimizer": "AdamW (loop default), lr 1e-5 constant, max_grad_norm 1.0",
            "timing": "per optimizer step from log.jsonl (log_every=1): batch / samples_per_s; warm-up steps dropped",
            "full_student": XLMR_LARGE,
            "full_teacher_text": CLIP_L14_TEXT,
            "full_teacher_vision": MINIMAL_VISION,
            "full_contrastive_vision": CLIP_L14_VISION if args.full_contrastive else None,
        },
        "runs": runs,
        "not_measured": not_measured,
        "markdown": table,
        "total_s": round((dt.datetime.now() - started).total_seconds(), 1),
    }
    out = Path(args.output) if args.output else RESULTS / f"training-clip-{started.date().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(table)
    for item in not_measured:
        print(f"\nnot measured: {item['size']} {item['task']} ({item['why']})")
    print(f"\nwritten {out} ({result['total_s']:.0f} s)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=["all", "tiny", "full"], default="all", help="which size(s) to run")
    parser.add_argument("--steps", type=int, default=0, help="timed optimizer steps (default: tiny 50, full 5)")
    parser.add_argument("--batch", type=int, default=0, help="batch size (default: tiny 32, full 8)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up steps (default: tiny 5, full 3)")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma list: fp32 (no mixed precision) and/or bf16")
    parser.add_argument("--tasks", default="distill,contrastive", help="comma list: distill and/or contrastive")
    parser.add_argument(
        "--full-contrastive",
        action="store_true",
        help="also measure contrastive learning at full size (XLM-R large + frozen ViT-L/14 at 224 px)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads, full size (0: torch's default)")
    parser.add_argument(
        "--tiny-threads",
        type=int,
        default=1,
        help="torch threads, tiny size (default 1: tiny ops gain nothing from more, and lose a lot on a loaded machine)",
    )
    parser.add_argument("--worker-timeout", type=int, default=1200, help="seconds before a worker is killed")
    parser.add_argument("--output", help="result JSON path (default benchmarks/results/training-clip-<date>.json)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args)
    else:
        run_driver(args)


if __name__ == "__main__":
    main()
