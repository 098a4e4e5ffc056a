"""A generation request checked against the server's limits and resolved into a :class:`Plan`.

Everything a request can get wrong (sizes, sampler, schedule type, model, LoRA tags, seed,
images) fails here with a 422 naming the field, before the job waits in the queue.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from altdiffusion.errors import InvalidInputError
from altdiffusion.pipelines.defaults import ModelDefaults
from altdiffusion.pipelines.hires import HiresFix
from altdiffusion.pipelines.samplers import SCHEDULE_TYPES, canonical_sampler_name, make_scheduler
from altdiffusion.pipelines.seeds import resolve_seed, seed_range
from altdiffusion.prompts.extra_networks import extract_tags
from altdiffusion.serve.config import ServeConfig
from altdiffusion.serve.errors import field_error
from altdiffusion.serve.generation_fields import hires_fix, hires_plan, randn_source, seed_resize
from altdiffusion.serve.images import BadImage, EncodedImage, read_image
from altdiffusion.serve.loras import LoraRegistry
from altdiffusion.serve.registry import ModelRegistry
from altdiffusion.serve.schemas import GenerationRequest, Img2ImgRequest


@dataclass(frozen=True)
class PipelineCall:
    """One pipeline call of an iteration: ``count`` images from ``seed`` on, from ``init_image``."""

    seed: int
    count: int
    init_image: EncodedImage | None
    subseed: int = -1


@dataclass(frozen=True)
class Plan:
    """A validated generation request, ready for the worker."""

    kind: str  # "txt2img" or "img2img"
    req: GenerationRequest
    sampler: str  # A1111 name
    schedule: str | None  # A1111 schedule type, None for automatic
    seed: int  # the job's first seed (a random one for -1); image i gets seed + i
    model: str | None  # override_settings.sd_model_checkpoint, as a configured name
    loras: tuple[tuple[Path, float], ...]  # from the prompt's <lora:name:weight> tags
    strength: float | None  # denoising strength (img2img only)
    mask_blur: int
    init_images: tuple[EncodedImage, ...] = ()  # decoded by the worker, one pipeline call at a time
    mask: EncodedImage | None = None
    warnings: tuple[str, ...] = ()  # settings the job runs with but the model draws badly at
    subseed: int = -1  # the job's first variation seed (a random one for -1); image i gets subseed + i
    randn_source: str = "CPU"  # A1111's RNG
    hires: HiresFix | None = None

    @property
    def total(self) -> int:
        return self.req.batch_size * self.req.n_iter

    @property
    def seeds(self) -> list[int]:
        """The seed of every image the job makes, in order (A1111: all the same with variation seeds)."""
        return [self.seed] * self.total if self.req.subseed_strength else seed_range(self.seed, self.total)

    @property
    def subseeds(self) -> list[int]:
        return seed_range(self.subseed, self.total)

    def calls(self, iteration: int) -> list[PipelineCall]:
        """The pipeline calls of one iteration (of ``n_iter``)."""
        batch = self.req.batch_size
        seeds = self.seeds[iteration * batch : (iteration + 1) * batch]
        subseeds = self.subseeds[iteration * batch : (iteration + 1) * batch]
        if len(self.init_images) <= 1:  # the pipeline gives image i of the batch seeds[0] + i
            return [PipelineCall(seeds[0], batch, self.init_images[0] if self.init_images else None, subseeds[0])]
        # A1111: image i of a batch starts from init_images[i % n], so each is its own call.
        images = self.init_images
        rows = enumerate(zip(seeds, subseeds))
        return [PipelineCall(seed, 1, images[i % len(images)], subseed) for i, (seed, subseed) in rows]


class Planner:
    """Turns requests into plans under one server's limits, models and LoRAs."""

    def __init__(self, config: ServeConfig, models: ModelRegistry, loras: LoraRegistry):
        self.config = config
        self.models = models
        self.loras = loras

    def plan(self, kind: str, req: GenerationRequest) -> Plan:
        """The plan of ``req``, without its images (see :meth:`with_images`); raises field errors.
        Settings the request leaves out are the model's defaults (the one it will run on)."""
        model = self._model(req)
        defaults = self.models.defaults(model or self.models.current)
        req = with_defaults(req, defaults)
        self._check_limits(req)
        sampler = self._sampler(req)
        schedule = self._schedule(req, sampler)
        size_warning = defaults.size_warning(req.width, req.height)
        hires = hires_fix(req, sampler, schedule)
        self._check_hires_limits(req, hires)
        seed_resize(req)
        return Plan(
            kind=kind,
            req=req,
            sampler=sampler,
            schedule=schedule,
            seed=self._seed(req.seed, "seed"),
            model=model,
            loras=self._loras(req),
            strength=req.denoising_strength if kind == "img2img" else None,
            mask_blur=_mask_blur(req) if kind == "img2img" else 4,
            warnings=(size_warning,) if size_warning else (),
            subseed=self._seed(req.subseed, "subseed"),
            randn_source=randn_source(req),
            hires=hires,
        )

    def with_images(self, plan: Plan, req: Img2ImgRequest) -> Plan:
        """``plan`` with the request's init images and mask, checked from their headers against the
        request's image budget (count, pixels each and together); the worker decodes them one call at
        a time. Base64 decoding is slow: run it off the event loop."""
        sent = [(("init_images", i), data) for i, data in enumerate(req.init_images)]
        sent += [(("mask",), req.mask)] if req.mask else []
        if len(sent) > self.config.max_images:
            raise field_error(
                "init_images",
                f"{len(sent)} images (init_images + mask) sent; this server accepts at most "
                f"{self.config.max_images} per request (--max-images)",
            )
        images, total = [], 0
        for field, data in sent:
            images.append(_read(data, self.decode_limit, field))
            total += images[-1].pixels
            if total > self.config.max_input_pixels:
                raise field_error(
                    field,
                    f"the images up to {images[-1].label} have {total} pixels together; this server accepts "
                    f"at most {self.config.max_input_pixels} per request (--max-input-pixels)",
                )
        mask = images.pop() if req.mask else None
        return dataclasses.replace(plan, init_images=tuple(images), mask=mask)

    @property
    def decode_limit(self) -> int:
        """Largest image a client may send: inputs are resized, so allow more than ``max_pixels``
        (but never more than one request's whole budget)."""
        return min(max(4 * self.config.max_pixels, 4096 * 4096), self.config.max_input_pixels)

    def _check_limits(self, req: GenerationRequest) -> None:
        config = self.config
        pixels = req.width * req.height
        if pixels > config.max_pixels:
            side = int(config.max_pixels**0.5) // 8 * 8
            raise field_error(
                "width",
                f"{req.width}x{req.height} is {pixels} pixels; this server allows at most "
                f"{config.max_pixels} (width x height), e.g. {side}x{side}",
            )
        if req.steps > config.max_steps:
            raise field_error("steps", f"steps is {req.steps}; this server allows at most {config.max_steps}")
        if req.batch_size * req.n_iter > config.max_batch:
            raise field_error(
                "batch_size",
                f"batch_size x n_iter is {req.batch_size * req.n_iter}; this server allows at most "
                f"{config.max_batch} images per request",
            )

    def _check_hires_limits(self, req: GenerationRequest, hires: HiresFix | None) -> None:
        if hires is None:
            return
        plan = hires_plan(req, hires)
        if plan.width * plan.height > self.config.max_pixels:
            raise field_error(
                "hr_scale",
                f"the hires fix's {plan.width}x{plan.height} is more than the {self.config.max_pixels} pixels "
                "this server allows; lower hr_scale or hr_resize_x/y",
            )
        if plan.steps > self.config.max_steps:
            raise field_error(
                "hr_second_pass_steps", f"{plan.steps} steps; this server allows at most {self.config.max_steps}"
            )

    def _sampler(self, req: GenerationRequest) -> str:
        # A1111: sampler_name wins; the legacy sampler_index counts only when sampler_name is not sent.
        sent = req.model_fields_set
        name = req.sampler_index if ("sampler_index" in sent and "sampler_name" not in sent) else req.sampler_name
        try:
            return canonical_sampler_name(name or req.sampler_index or "Euler")
        except InvalidInputError as exc:
            raise field_error("sampler_name", str(exc)) from None

    def _schedule(self, req: GenerationRequest, sampler: str) -> str | None:
        schedule = _schedule_name(req.scheduler)
        try:
            make_scheduler(sampler, {}, schedule)  # unsupported combinations fail here, not in the worker
        except InvalidInputError as exc:
            raise field_error("scheduler" if schedule else "sampler_name", str(exc)) from None
        return schedule

    def _seed(self, value: int, field: str) -> int:
        try:
            return resolve_seed(value)
        except InvalidInputError as exc:
            raise field_error(field, str(exc)) from None

    def _model(self, req: GenerationRequest) -> str | None:
        wanted = (req.override_settings or {}).get("sd_model_checkpoint")
        if wanted is None:
            return None
        model = self.models.lookup(wanted) if isinstance(wanted, str) else None
        if model is None:
            raise field_error(
                ("override_settings", "sd_model_checkpoint"),
                f"model {wanted!r} not found; use a title or name from /sdapi/v1/sd-models",
            )
        return model

    def _loras(self, req: GenerationRequest) -> tuple[tuple[Path, float], ...]:
        try:
            _, tags = extract_tags(req.prompt)
            if len(tags) > self.config.max_lora_tags:
                raise InvalidInputError(
                    f"{len(tags)} <lora:...> tags; this server allows at most {self.config.max_lora_tags} (--max-lora-tags)"
                )
            return tuple((self.loras.path(name), weight) for name, weight in tags)
        except InvalidInputError as exc:
            raise field_error("prompt", str(exc)) from None


def with_defaults(req: GenerationRequest, defaults: ModelDefaults) -> GenerationRequest:
    """``req`` with the model's defaults for the size, CFG, steps and sampler it did not send."""
    sent = req.model_fields_set
    update = {name: value for name, value in defaults.settings().items() if name not in sent}
    if "sampler_index" in sent:  # A1111's legacy spelling counts as naming a sampler
        update.pop("sampler_name", None)
    return req.model_copy(update=update)


def _schedule_name(text: str | None) -> str | None:
    """The A1111 schedule type a request names (any case, ``_`` for spaces); None for automatic."""
    if text is None or not text.strip():
        return None
    wanted = text.strip().lower().replace("_", " ")
    for label in SCHEDULE_TYPES:
        if label.lower() == wanted:
            return None if label == "Automatic" else label
    raise field_error("scheduler", f"unknown scheduler {text!r}; use one of: {', '.join(SCHEDULE_TYPES)}")


def _mask_blur(req: Img2ImgRequest) -> int:
    return int(req.mask_blur if req.mask_blur is not None else max(req.mask_blur_x, req.mask_blur_y, 0))


def _read(data: str, max_pixels: int, field: tuple) -> EncodedImage:
    try:
        return read_image(data, max_pixels=max_pixels, field=field)
    except BadImage as exc:
        raise field_error(field, str(exc)) from None
