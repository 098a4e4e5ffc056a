"""`altdiffusion mini build`: the whole AltCLIP -> AltDiffusion recipe, in miniature, from a seed.

    data        mini world shards (9-language captions) + parallel text          (world.py); the CLIP
                stages read every sample, the VAE and UNet stages the first RECIPE["data"]["images"]
    teacher     English CLIPModel, both towers trained contrastively             train clip-contrastive --train-vision
    vae         AutoencoderKL reconstructing the world's images                   train vae
    vae-decoder its decoder alone, longer; the encoder (the latent space) frozen  train vae --decoder-only
    sd          SD-mini: a UNet trained on English captions, teacher text tower   train diffusion --stage quality
    distill     AltCLIP-mini stage 1, teacher learning on parallel captions       train clip-distill
    altclip     AltCLIP-mini stage 2, contrastive, image tower frozen             train clip-contrastive
    align       AltDiffusion-mini stage 1: SD-mini's UNet, cross-attention K/V    train diffusion --stage align
    quality     AltDiffusion-mini stage 2: whole UNet, caption dropout            train finetune
    ground-*    the words' attention put on their things (--no-grounding skips): token  train finetune --grounding-*
                loss, then + background pass, then + pixel loss
    scratch     baseline: a multilingual CLIP trained from scratch until it matches AltCLIP-mini's
                Chinese retrieval R@1 or plateaus (the compute comparison in the report)

Every stage is one of this project's training commands, run as a subprocess; a stage whose
``model/`` exists is kept, so an interrupted build continues. ``build.json`` records each
stage's wall and CPU seconds and the sha256 of what it made (for checking determinism).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from altdiffusion.errors import AltDiffusionError
from altdiffusion.hashing import update_from_file
from altdiffusion.mini import architecture

_QUALITY = {"batch": 64, "lr": 2e-4, "warmup": 50, "noise_offset": 0.1}  # also the ground-* stages

# Scale of a full build (about 3 h 45 min on 2 CPU cores, the baseline apart); `--smoke` divides steps.
RECIPE = {
    # The CLIP stages (teacher, altclip, scratch) read all 80,000 distinct samples; the VAE and UNet
    # stages the first 20,000 (`images`), the samples they were tuned on. A teacher of 2,500 steps on
    # 20,000 fit its pairs (16 epochs) and AltCLIP-mini named the shape of 94-97.5% of new one-thing
    # images; 5,000 steps on 80,000 give 99.0-100% (README, mini section, "More distinct images").
    "data": {"train": 80000, "images": 20000, "parallel": 20000},
    "teacher": {"steps": 5000, "batch": 128, "lr": 5e-4, "warmup": 100},
    "vae": {"steps": 3500, "batch": 16, "lr": 1e-3, "warmup": 50},
    # The decoder alone, on the frozen encoder's latents: 3,500 steps leave it undertrained (the checker
    # passes 91.4 / 81.2% of one- / two-thing renders after encode -> decode; 95.3 / 90.6% after this).
    "vae-decoder": {"steps": 3000, "batch": 16, "lr": 5e-4, "warmup": 50},
    "sd": {"steps": 1500, "batch": 64, "lr": 5e-4, "warmup": 100, "noise_offset": 0.1},
    "distill": {"steps": 700, "batch": 256, "lr": 5e-4, "warmup": 50},
    "altclip": {"steps": 600, "batch": 128, "lr": 1e-4, "warmup": 20},
    "align": {"steps": 600, "batch": 64, "lr": 5e-4, "warmup": 50, "noise_offset": 0.1},
    "quality": {"steps": 2000, **_QUALITY},
    # The ground-* stages: quality's settings, constant lr; the weights of the token and pixel losses and of
    # the background pass (README, mini section, "Grounding the words": all three at once from the
    # start cost 20 points of one-thing accuracy; a pixel weight of 0.01 instead of 0.003 cost 12
    # more of Chinese one-thing and gave a lower order probe). The pixel stage is long because
    # binding grows with it: two-thing 14 / 34 / 58 / 70% English after 400 / 800 / 1,600 / 3,200 steps
    # (4,800 binds better still but costs DreamBooth and align: README, "A longer pixel stage, again").
    "ground-token": {**_QUALITY, "steps": 1000, "weights": (0.01, 0, 0)},
    "ground-background": {**_QUALITY, "steps": 600, "weights": (0.01, 0, 1)},
    "ground-pixel": {**_QUALITY, "steps": 3200, "weights": (0.01, 0.003, 1)},
    # Until AltCLIP-mini's Chinese R@1 or a plateau (`plateaued`): at most 20,000 steps, ~3 h on 2 CPU cores.
    "scratch": {"segment": 500, "max_segments": 40, "batch": 128, "lr": 5e-4},
}


@dataclass
class Build:
    out: Path
    seed: int = 0
    smoke: bool = False
    steps_scale: float = 1.0
    baseline: bool = True
    grounding: bool = True  # the ground-* stages after quality (the shipped weights were built with them)
    scratch_segments: int | None = None  # None: RECIPE's max_segments
    log: dict = field(default_factory=dict)
    started: float | None = field(default=None, init=False)  # this invocation's start (time.time())

    def steps(self, stage: str) -> int:
        n = RECIPE[stage]["steps"]
        return max(4, n // 50) if self.smoke else max(1, round(n * self.steps_scale))

    # -- running one stage -----------------------------------------------------------------------

    def train(self, stage: str, command: str, *args: str | Path) -> Path:
        r = RECIPE[stage]
        output = self.out / stage
        if (output / "model").is_dir():
            print(f"[mini build] {stage}: kept {output / 'model'}", flush=True)
            return output / "model"
        steps = self.steps(stage)
        argv = self.train_argv(command, *map(str, args), output=output, steps=steps, batch=r["batch"], lr=r["lr"])
        argv += ["--warmup-steps", str(min(r["warmup"], steps // 2)), "--save-every", "1000000"]
        if "noise_offset" in r:
            argv += ["--noise-offset", str(r["noise_offset"])]
        self.log.setdefault("stages", {})[stage] = {"wall_s": 0.0, "cpu_s": 0.0}  # a stage run again is timed afresh
        self.run(stage, argv)
        return output / "model"

    def train_argv(self, command: str, *args: str, output: Path, steps: int, batch: int, lr: float) -> list[str]:
        """`altdiffusion train COMMAND ARGS` with the settings every stage shares (smoke: batch <= 16)."""
        return [
            sys.executable,
            "-m",
            "altdiffusion.cli",
            "train",
            command,
            *args,
            "--output-dir",
            str(output),
            "--steps",
            str(steps),
            "--batch-size",
            str(min(batch, 16) if self.smoke else batch),
            "--lr",
            str(lr),
            "--seed",
            str(self.seed),
            "--log-every",
            "50",
            "--no-tensorboard",
        ] + ([] if sys.stdout.isatty() else ["--no-progress"])

    def run(self, stage: str, argv: list[str]) -> None:
        print(f"[mini build] {stage}: {' '.join(argv[3:])}", flush=True)
        wall, cpu = time.time(), _children_cpu()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        done = subprocess.run(argv, env=env)
        if done.returncode:
            raise AltDiffusionError(
                f"mini build: stage {stage!r} failed (exit {done.returncode}); fix it and rerun to continue"
            )
        entry = self.log.setdefault("stages", {}).setdefault(stage, {"wall_s": 0.0, "cpu_s": 0.0})
        entry["wall_s"] = round(entry["wall_s"] + time.time() - wall, 1)
        entry["cpu_s"] = round(entry["cpu_s"] + _children_cpu() - cpu, 1)
        entry["ran_on"] = _stage_device()
        self.save_log()

    def save_log(self) -> None:
        if self.started is not None:
            # Kept current at every save, so an invocation killed part-way still counts to its last save.
            runs = self.log["invocation_wall_s"]
            runs[-1] = round(time.time() - self.started, 1)
            self.log["total_wall_s"] = round(sum(runs), 1)
        from altdiffusion.mini.world import write_atomically

        # Replaced whole: a build killed mid-write (it runs for hours) keeps its previous log.
        text = json.dumps(self.log, indent=2) + "\n"
        write_atomically(self.out / "build.json", lambda fh: fh.write(text.encode()))

    # -- the recipe ------------------------------------------------------------------------------

    def samples(self, kind: str) -> int:
        return RECIPE["data"][kind] // (20 if self.smoke else 1)

    def data(self) -> tuple[Path, Path]:
        from altdiffusion.mini import world

        shards, parallel = self.out / "data" / "train", self.out / "data" / "parallel.jsonl"
        if not parallel.is_file():
            start = time.time()
            world.write_shards(shards, self.samples("train"), self.seed, split="train")
            world.write_parallel_text(parallel, self.samples("parallel"), self.seed)
            wall_s = round(time.time() - start, 1)
            self.log.setdefault("stages", {})["data"] = {"wall_s": wall_s, "samples": self.samples("train")}
            self.save_log()
        return shards, parallel

    def image_shards(self, shards: Path) -> str:
        """The shards holding the first ``images`` samples (a brace pattern): the VAE and UNet stages'
        data. A sample depends only on its index, so they are the samples a smaller build writes."""
        from altdiffusion.mini import world

        last = math.ceil(self.samples("images") / world.SHARD_SIZE) - 1
        return f"{shards}/{{00000..{last:05d}}}.tar"

    def captions(self, parallel: Path, languages=None) -> list[str]:
        rows = [json.loads(line) for line in parallel.read_text(encoding="utf-8").splitlines()]
        return [text for row in rows for lang, text in row.items() if languages is None or lang in languages]

    def __call__(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        if (self.out / "build.json").is_file():
            self.log = json.loads((self.out / "build.json").read_text())
        self.log.update(
            seed=self.seed, smoke=self.smoke, steps_scale=self.steps_scale, grounding=self.grounding, recipe=RECIPE
        )
        # A build folder may be finished over several invocations (interrupted, or the baseline
        # carried further): the total is the sum of their wall times.
        runs = self.log.setdefault(
            "invocation_wall_s", [self.log["total_wall_s"]] if "total_wall_s" in self.log else []
        )
        runs.append(0.0)
        self.started = time.time()
        shards, parallel = self.data()
        images = self.image_shards(shards)
        teacher = self.teacher(shards, parallel)
        vae = self.vae(images)
        sd = self.sd(images, teacher, vae)
        altclip = self.altclip(shards, parallel, teacher)
        final = self.altdiffusion(images, sd, altclip)
        self.log["recipe_wall_s"] = round(
            sum(s["wall_s"] for name, s in self.log["stages"].items() if name != "scratch"), 1
        )
        self.log["outputs"] = {"altclip": str(altclip), "altdiffusion": str(final)}
        self.log["hashes"] = {name: folder_hash(Path(p)) for name, p in self.log["outputs"].items()}
        self.save_log()  # the weights are done: a baseline stopped part-way leaves them recorded
        if self.baseline:
            self.scratch_baseline(altclip, teacher, self.init, shards)
        self.save_log()
        return self.log

    @property
    def init(self) -> Path:
        """Each stage's randomly initialised starting model (written once, kept on a rerun)."""
        return self.out / "init"

    def teacher(self, shards: Path, parallel: Path) -> Path:
        if not (self.init / "teacher").is_dir():
            architecture.write_teacher_init(self.init / "teacher", self.captions(parallel, ["en"]), self.seed)
        args = ["--model", self.init / "teacher", "--shards", shards, "--train-vision", "--languages", "en"]
        return self.train("teacher", "clip-contrastive", *args)

    def vae(self, shards: str) -> Path:
        if not (self.init / "vae").is_dir():
            architecture.write_vae_init(self.init / "vae")
        # The mean of q(z|x) is what the diffusion stages encode; small objects on plain backgrounds
        # need the foreground weighting (without it, 800 steps still gave colourless blobs).
        options = "--resolution 64 --posterior mode --foreground-weight 3".split()
        whole = self.train("vae", "vae", "--vae", self.init / "vae", "--data", shards, *options)
        # Then the decoder alone: the latents the diffusion stages learn stay the encoder's.
        return self.train("vae-decoder", "vae", "--vae", whole, "--data", shards, *options, "--decoder-only")

    def sd(self, shards: str, teacher: Path, vae: Path) -> Path:
        # Every diffusion stage trains with offset noise. The per-channel mean of a 16x16 latent's
        # noise has std 1/16, as much as SD's schedule leaves of the image's mean at t=T
        # (sqrt(alpha_bar_T) = 0.07), so the UNet learnt to take the background's brightness from the
        # starting noise: 13 of 64 English test images had the wrong background, 0 with the offset.
        if not (self.init / "sd").is_dir():
            architecture.write_sd_init(self.init / "sd", teacher, vae, self.seed)
        options = "--stage quality --resolution 64 --caption-dropout 0.1 --min-snr-gamma 5 --languages en".split()
        return self.train("sd", "diffusion", "--base", self.init / "sd", *options, "--data", shards, "--cache-latents")

    def altclip(self, shards: Path, parallel: Path, teacher: Path) -> Path:
        """AltCLIP-mini: teacher learning on parallel captions, then contrastive learning."""
        if not (self.init / "student").is_dir():
            architecture.write_student_init(self.init / "student", self.captions(parallel), self.seed)
        args = ["--teacher", teacher, "--student", self.init / "student", "--data", parallel]
        distilled = self.train("distill", "clip-distill", *args)
        return self.train("altclip", "clip-contrastive", "--model", distilled, "--shards", shards)

    def altdiffusion(self, shards: str, sd: Path, altclip: Path) -> Path:
        """AltDiffusion-mini: SD-mini's UNet aligned to AltCLIP-mini's text tower, then trained whole."""
        align = "--conditioning m9 --stage align --align-params kv --resolution 64".split()
        data = ["--data", shards, "--cache-latents"]
        aligned = self.train("align", "diffusion", "--base", sd, "--text-encoder", altclip, *align, *data)
        quality = "--resolution 64 --caption-dropout 0.1 --min-snr-gamma 5".split()
        final = self.train("quality", "finetune", "--model", aligned, *quality, *data)
        for stage in ("ground-token", "ground-background", "ground-pixel") if self.grounding else ():
            token, pixel, background = RECIPE[stage]["weights"]
            weights = f"--grounding-token {token} --grounding-pixel {pixel} --grounding-background {background}"
            final = self.train(
                stage, "finetune", "--model", final, *quality, *data, "--lr-schedule", "constant", *weights.split()
            )
        return final

    def scratch_baseline(self, altclip: Path, teacher: Path, init: Path, shards: Path) -> None:
        """Train a multilingual CLIP (AltCLIP-mini's shape, both towers random) in segments until its
        Chinese text->image R@1 reaches AltCLIP-mini's or plateaus; record the CPU seconds that took.

        A baseline that stopped short (``max_segments``) continues from its last checkpoint when the
        build is rerun with more segments, so the comparison can be carried further later."""
        from altdiffusion.mini.evaluate import retrieval_r1

        r = RECIPE["scratch"]
        segments = self.scratch_segments or (2 if self.smoke else r["max_segments"])
        record = self.log.get("scratch") or {}
        curve = record.get("curve", [])
        # An explicit --scratch-segments carries a plateaued baseline on; the default stops there.
        stop_at_plateau = self.scratch_segments is None
        finished = record.get("reached") or (stop_at_plateau and record.get("plateaued"))
        if finished or (record.get("done") and len(curve) >= segments):
            return
        if not curve:
            record = {"target_zh_r1": retrieval_r1(altclip, "zh", seed=self.seed), "curve": []}
            self.log.setdefault("stages", {})["scratch"] = {"wall_s": 0.0, "cpu_s": 0.0}
            if not (init / "scratch").is_dir():
                architecture.write_scratch_altclip_init(init / "scratch", init / "student", teacher, self.seed)
        output = self.out / "scratch"
        if record["curve"] and len(record["curve"]) < segments and not any((output / "checkpoints").glob("step-*")):
            # `--resume` would start over at step 0 and the curve would lie about the steps.
            raise AltDiffusionError(
                f"mini build: the from-scratch baseline has no checkpoint in {output / 'checkpoints'} "
                "to continue from; delete its 'scratch' entry in build.json to run it again from the start"
            )
        record["done"] = False
        for k in range(len(record["curve"]) + 1, segments + 1):
            steps = (max(4, r["segment"] // 50) if self.smoke else r["segment"]) * k
            r1 = self.scratch_segment(init / "scratch", shards, output, steps, resume=k > 1)
            record["curve"].append({"steps": steps, "cpu_s": self.log["stages"]["scratch"]["cpu_s"], "zh_r1": r1})
            self.log["scratch"] = record
            self.save_log()
            if r1 >= record["target_zh_r1"]:
                record["reached"] = True
                break
            record["plateaued"] = plateaued(record["curve"])
            if record["plateaued"] and stop_at_plateau:
                break
        record["done"] = True
        self.log["scratch"] = record
        self.save_log()

    def scratch_segment(self, init: Path, shards: Path, output: Path, steps: int, *, resume: bool) -> float:
        """Train the baseline on to ``steps`` (constant lr, so segments chain exactly); its Chinese R@1."""
        from altdiffusion.mini.evaluate import retrieval_r1

        r = RECIPE["scratch"]
        argv = self.train_argv(
            "clip-contrastive",
            "--model",
            str(init),
            "--shards",
            str(shards),
            "--train-vision",
            output=output,
            steps=steps,
            batch=r["batch"],
            lr=r["lr"],
        )
        argv += ["--lr-schedule", "constant", "--save-every", str(steps), "--keep-checkpoints", "1"]
        self.run("scratch", argv + (["--resume"] if resume else []))
        return retrieval_r1(output / "model", "zh", seed=self.seed)


def plateaued(curve: list[dict], *, min_points: int = 8, gain: float = 0.01) -> bool:
    """True when the baseline's last doubling of training gained under ``gain`` R@1: the best of
    the curve's second half is within ``gain`` of the best of its first half. Best-of-half, not
    the last point: R@1 over 200 captions moves by sampling noise of about 3 points."""
    if len(curve) < min_points:
        return False
    r1 = [point["zh_r1"] for point in curve]
    half = len(r1) // 2
    return max(r1[half:]) - max(r1[:half]) < gain


def _stage_device() -> str:
    """Where the stages run: the GPU accelerate picks when there is one, else this CPU."""
    import torch

    from altdiffusion.devices import describe_device

    return describe_device(torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def folder_hash(folder: Path) -> str:
    """sha256 over a folder's safetensors files: each one's relative path, then its bytes."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.safetensors")):
        digest.update(path.relative_to(folder).as_posix().encode())
        update_from_file(digest, path)
    return digest.hexdigest()
