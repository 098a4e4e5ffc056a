"""A1111's txt2img / img2img response: base64 PNGs, the request echoed, and ``info`` (a JSON string).

Besides A1111's fields, ``info`` says per image whether it is ``partial`` (the job was
stopped) and how many ``sampling_steps_done`` it went through, and for the job whether it
was ``interrupted``, how many iterations were ``skipped_iterations``, and ``warnings``: one
line per setting the model draws badly at (a size far from its native one).
"""

from __future__ import annotations

import json
from typing import Any

from altdiffusion import __version__
from altdiffusion.serve.images import encode_png
from altdiffusion.serve.jobs import JobOutcome
from altdiffusion.serve.plans import Plan


def generation_response(plan: Plan, outcome: JobOutcome) -> dict[str, Any]:
    records = outcome.records
    images = [encode_png(r.image, r.infotext) for r in records] if plan.req.send_images else []
    info = {**_request_info(plan), **_outcome_info(outcome)}
    return {"images": images, "parameters": _echo(plan), "info": json.dumps(info, ensure_ascii=False)}


def _echo(plan: Plan) -> dict[str, Any]:
    """The request as the server understood it (A1111's ``parameters``)."""
    echo = plan.req.model_dump()
    echo["sampler_name"] = plan.sampler
    if plan.kind == "img2img" and not getattr(plan.req, "include_init_images", False):
        echo["init_images"] = None  # megabytes of base64 the client already has
        echo["mask"] = None
    return echo


def _request_info(plan: Plan) -> dict[str, Any]:
    req, total = plan.req, plan.total
    return {
        "prompt": req.prompt,
        "all_prompts": [req.prompt] * total,
        "negative_prompt": req.negative_prompt,
        "all_negative_prompts": [req.negative_prompt] * total,
        "seed": plan.seed,
        "all_seeds": plan.seeds,
        "subseed": plan.subseed,
        "all_subseeds": plan.subseeds,
        "subseed_strength": req.subseed_strength,
        "width": req.width,
        "height": req.height,
        "sampler_name": plan.sampler,
        "scheduler": plan.schedule or "Automatic",
        "cfg_scale": req.cfg_scale,
        "steps": req.steps,
        "batch_size": req.batch_size,
        "n_iter": req.n_iter,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": req.seed_resize_from_w,
        "seed_resize_from_h": req.seed_resize_from_h,
        "denoising_strength": plan.hires.denoising_strength if plan.hires else plan.strength,
        "extra_generation_params": {"Mask blur": plan.mask_blur} if plan.mask is not None else {},
        "index_of_first_image": 0,
        "styles": req.styles or [],
        "clip_skip": 1,
        "is_using_inpainting_conditioning": False,
        "version": f"altdiffusion {__version__}",
        "warnings": list(plan.warnings),
    }


def _outcome_info(outcome: JobOutcome) -> dict[str, Any]:
    records = outcome.records
    return {
        "sd_model_name": outcome.model_name,
        "sd_model_hash": outcome.model_hash,
        "infotexts": [r.infotext for r in records],
        "job_timestamp": outcome.timestamp,
        "image_seeds": [r.seed for r in records],
        "nsfw": [r.nsfw for r in records],
        "partial": [r.partial for r in records],
        "sampling_steps_done": [r.steps_done for r in records],
        "interrupted": outcome.interrupted,
        "skipped_iterations": outcome.skipped_iterations,
    }
