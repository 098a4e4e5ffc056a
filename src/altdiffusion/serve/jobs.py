"""The worker side of a generation: run a :class:`~altdiffusion.serve.plans.Plan` on the loaded pipeline.

The pipeline writes every image's infotext and seed; this module only chooses the model,
merges the prompt's LoRAs for the job, calls the pipeline once per batch (or per init
image), and collects one :class:`ImageRecord` per image. ``POST interrupt`` stops the job,
``POST skip`` only the current iteration: the pipeline then raises
``GenerationInterrupted``, whose result carries the images of the last finished step.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageOps

from altdiffusion.pipelines.alt_diffusion import GenerationInterrupted, GenerationResult
from altdiffusion.serve.errors import field_error
from altdiffusion.serve.images import BadImage, EncodedImage
from altdiffusion.serve.plans import PipelineCall, Plan
from altdiffusion.serve.registry import ModelRegistry
from altdiffusion.serve.runner import JobState, JobTimeLimit


@dataclass(frozen=True)
class ImageRecord:
    """One generated image and what the response says about it."""

    image: Image.Image
    infotext: str
    seed: int
    nsfw: bool
    partial: bool  # stopped early: decoded from the latents of the last finished step
    steps_done: int


@dataclass
class JobOutcome:
    """Everything a finished (or stopped) job produced."""

    model_name: str
    model_hash: str
    timestamp: str  # when the job started, as A1111's job_timestamp
    records: list[ImageRecord] = field(default_factory=list)
    interrupted: bool = False
    skipped_iterations: int = 0


def run_generation(plan: Plan, models: ModelRegistry, state: JobState, future: Future) -> JobOutcome:
    """Run ``plan`` on its model with its LoRAs merged; the model's own weights come back afterwards."""
    previous = models.current
    pipe = models.load(plan.model)
    try:
        for path, weight in plan.loras:
            pipe.load_lora(path, weight)
        return _run_iterations(plan, pipe, state, future)
    finally:
        if plan.loras:
            pipe.unload_lora()  # the next job starts from the model's own weights
        if plan.model and plan.model != previous and plan.req.override_settings_restore_afterwards:
            models.load(previous)


def _run_iterations(plan: Plan, pipe, state: JobState, future: Future) -> JobOutcome:
    state.begin(plan.kind, plan.req.n_iter, future, pipe.latent_to_rgb)  # made here: the worker owns the VAE
    try:
        outcome = JobOutcome(pipe.name, pipe.model_hash, state.snapshot()["job_timestamp"])
        for iteration in range(plan.req.n_iter):
            state.next_iteration(iteration)
            _check_time(state)
            if state.interrupted:
                outcome.interrupted = True
                break
            try:
                for call in plan.calls(iteration):
                    state.next_unit()
                    outcome.records += records_of(pipe(**pipeline_arguments(plan, call, state)))
            except GenerationInterrupted as stopped:
                _check_time(state)
                outcome.records += records_of(stopped.result)
                if state.interrupted:
                    outcome.interrupted = True
                    break
                outcome.skipped_iterations += 1
        return outcome
    finally:
        state.end()


def _check_time(state: JobState) -> None:
    if state.should_stop() and state.timed_out:
        raise JobTimeLimit(
            f"the job ran past this server's limit of {state.time_limit} s per request (--max-job-seconds); "
            "ask for fewer steps, images or pixels"
        )


def pipeline_arguments(plan: Plan, call: PipelineCall, state: JobState) -> dict[str, Any]:
    """The pipeline's arguments for one call: the prompt as sent (LoRA tags included), the sampler
    and schedule type by A1111 name; progress goes to ``state``, which can also stop the call."""
    req = plan.req
    arguments: dict[str, Any] = dict(
        prompt=req.prompt,
        negative_prompt=req.negative_prompt,
        num_inference_steps=req.steps,
        guidance_scale=float(req.cfg_scale),
        height=req.height,
        width=req.width,
        seed=call.seed,
        num_images_per_prompt=call.count,
        sampler=plan.sampler,
        schedule=plan.schedule,
        eta=req.eta or 0.0,
        subseed=call.subseed,
        subseed_strength=req.subseed_strength,
        seed_resize_from_h=max(req.seed_resize_from_h, 0),
        seed_resize_from_w=max(req.seed_resize_from_w, 0),
        randn_source=plan.randn_source,
        hires=plan.hires,
        progress=False,
        callback=lambda step, total, latents: state.step(step, total, latents.detach().clone()),
        should_stop=state.should_stop,
    )
    if call.init_image is not None:
        image = _decoded(call.init_image).convert("RGB")
        arguments.update(image=image, strength=float(plan.strength), mask_image=_mask(plan, image.size))
        arguments.update(mask_blur=plan.mask_blur)
    return arguments


def _decoded(encoded: EncodedImage) -> Image.Image:
    try:
        return encoded.decode()
    except BadImage as exc:
        raise field_error(encoded.field, str(exc)) from None


def _mask(plan: Plan, size: tuple[int, int]) -> Image.Image | None:
    """The plan's mask, decoded for one call: white = repaint (inverted on request), at the image's size."""
    if plan.mask is None:
        return None
    mask = _decoded(plan.mask).convert("L")
    if plan.req.inpainting_mask_invert:
        mask = ImageOps.invert(mask)
    return mask if mask.size == size else mask.resize(size, Image.NEAREST)


def records_of(result: GenerationResult) -> list[ImageRecord]:
    nsfw = result.nsfw or [False] * len(result.images)
    rows = zip(result.images, result.infotexts, result.seeds, nsfw)
    return [ImageRecord(image, text, seed, flag, result.partial, result.steps_done) for image, text, seed, flag in rows]
