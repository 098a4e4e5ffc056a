#!/usr/bin/env python
"""Loading a full-size AltDiffusion-m9 from its diffusers folder versus from one A1111-layout file.

1. Builds a full-size AltDiffusion-m9 with random float16 weights from the architecture the
   package ships (``models/configs/altdiffusion-m9``: XLM-R large + m9 head, SD v1.4 UNet, SD VAE)
   and the real XLM-R tokenizer, and writes it as a diffusers folder (``save_pretrained``).
2. Converts the folder to one ``.safetensors`` (``altdiffusion.pipelines.convert``, float16).
3. Loads each on the CPU in its own subprocess (``--worker``), in fp32 (the CPU default: the
   float16 weights are cast) and in bf16, and reports the load's wall time and its peak RSS above
   the process's RSS after imports (VmHWM, reset right before loading), against the loaded
   model's size (its parameters in the loaded dtype).
4. Each worker then draws one tiny image (64x64, 2 Euler steps, seed 0); folder and file must
   give the same pixels (max abs diff 0).

Usage::

    python benchmarks/single_file.py                  # ~5 GB of disk under --work, ~10 GB RAM peak
    python benchmarks/single_file.py --work /tmp/sf --keep

Results: ``benchmarks/results/single-file-<date>.json`` and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procinfo import cpu_name, mib, reset_peak_rss, status_kib, trim_heap


def build_folder(folder: Path) -> None:
    """Random float16 weights in the published m9 architecture, saved as a diffusers folder."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from altdiffusion.mini.tokenizer import required_real_xlmr_tokenizer_file
    from altdiffusion.models.loading import read_json
    from altdiffusion.models.single_file import CONFIGS
    from altdiffusion.models.text_encoder import AltTextEncoder, text_config_from_dict
    from altdiffusion.models.tiny_tokenizers import write_xlmr_tokenizer
    from altdiffusion.models.tokenizer import load_tokenizer
    from altdiffusion.pipelines.alt_diffusion import AltDiffusionPipeline
    from altdiffusion.pipelines.components import load_scheduler

    source = CONFIGS / "altdiffusion-m9"
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(read_json(source / "unet" / "config.json"))
        vae = AutoencoderKL.from_config(read_json(source / "vae" / "config.json"))
        text = AltTextEncoder(text_config_from_dict(read_json(source / "text_encoder" / "config.json")), head="m9")
    generator = torch.Generator().manual_seed(0)
    for module in (unet, vae, text):
        module.to_empty(device="cpu").to(torch.float16)
        with torch.no_grad():
            for name, p in module.named_parameters():
                if name.endswith("bias"):
                    p.zero_()
                elif p.ndim == 1:  # norm scales
                    p.fill_(1.0)
                else:
                    p.copy_(torch.randn(p.shape, generator=generator) * 0.02)
    write_xlmr_tokenizer(
        folder / "tokenizer",
        max_length=77,
        with_tokenizer_json=True,
        tokenizer_json=required_real_xlmr_tokenizer_file().read_bytes(),
    )
    pipe = AltDiffusionPipeline(
        tokenizer=load_tokenizer(folder / "tokenizer", max_length=77),
        text_encoder=text.eval(),
        unet=unet.eval(),
        vae=vae.eval(),
        scheduler=load_scheduler(source / "scheduler"),
        name="AltDiffusion-m9-random",
    )
    pipe.save_pretrained(folder)


def worker(source: str, config: str | None, dtype: str, out: Path) -> None:
    """One load in this fresh process: time, peak RSS above the post-import RSS, then one image."""
    import numpy as np

    from altdiffusion.pipelines.alt_diffusion import load_pipeline

    trim_heap()
    before = status_kib("VmRSS")
    reset_peak_rss()
    start = time.perf_counter()
    pipe = load_pipeline(source, device="cpu", dtype=dtype, safety_checker=False, config=config)
    seconds = time.perf_counter() - start
    peak = status_kib("VmHWM")
    model_bytes = sum(p.numel() * p.element_size() for m in pipe.modules().values() for p in m.parameters())
    image = pipe("一只猫", height=64, width=64, num_inference_steps=2, seed=0, sampler="Euler", progress=False)
    np.save(out.with_suffix(".npy"), np.asarray(image.images[0]))
    result = {
        "source": source,
        "dtype": dtype,
        "load_s": round(seconds, 2),
        "rss_before_mib": mib(before),
        "peak_rss_mib": mib(peak),
        "load_peak_above_imports_mib": mib(peak - before),
        "model_mib": round(model_bytes / 2**20, 1),
        "model_hash": pipe.model_hash,
    }
    result["peak_over_model"] = round(result["load_peak_above_imports_mib"] / result["model_mib"], 2)
    out.write_text(json.dumps(result))


def run_worker(source: Path, config: Path | None, dtype: str, out: Path) -> dict:
    argv = [sys.executable, __file__, "--worker", str(source), "--dtype", dtype, "--out", str(out)]
    if config is not None:
        argv += ["--config", str(config)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    subprocess.run(argv, check=True, env=env)
    return json.loads(out.read_text())


def main() -> None:
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/altdiffusion-single-file-bench"))
    parser.add_argument("--keep", action="store_true", help="keep the folder and file for a rerun")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--config", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.config, args.dtype, args.out)

    from altdiffusion.pipelines.convert import convert

    folder, file = args.work / "AltDiffusion-m9-random", args.work / "AltDiffusion-m9-random.safetensors"
    timings = {}
    if not (folder / "model_index.json").is_file():
        start = time.perf_counter()
        build_folder(folder)
        timings["build_folder_s"] = round(time.perf_counter() - start, 1)
    if not file.is_file():
        start = time.perf_counter()
        convert(folder, file)
        timings["convert_s"] = round(time.perf_counter() - start, 1)
    rows = []
    for dtype in ("fp32", "bf16"):
        for kind, source, config in (("folder", folder, None), ("file", file, folder)):
            row = run_worker(source, config, dtype, args.work / f"{kind}-{dtype}.json")
            rows.append({"kind": kind, **row})
        a, b = (np.load(args.work / f"{k}-{dtype}.npy").astype(int) for k in ("folder", "file"))
        rows[-1]["max_abs_diff_vs_folder"] = int(np.abs(a - b).max())
    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_name(),
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "file_bytes": file.stat().st_size,
        "file_dtype": "float16",
        **timings,
        "rows": rows,
    }
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / f"single-file-{dt.date.today()}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"file {file.stat().st_size / 2**30:.2f} GiB (float16); {report['cpu']}")
    print("| source | dtype | load s | peak RSS above imports | model | peak / model | image diff |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        diff = r.get("max_abs_diff_vs_folder", "")
        print(
            f"| {r['kind']} | {r['dtype']} | {r['load_s']} | {r['load_peak_above_imports_mib']:.0f} MiB "
            f"| {r['model_mib']:.0f} MiB | {r['peak_over_model']} | {diff} |"
        )
    if not args.keep:
        shutil.rmtree(args.work)


if __name__ == "__main__":
    main()
