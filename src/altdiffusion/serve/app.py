"""An AUTOMATIC1111-compatible HTTP API (``/sdapi/v1/...``) for AltDiffusion, on FastAPI.

Behaviour worth knowing (see also the README section "HTTP API"):

* Models are chosen only by their configured name (``create_app(models={"name": path})``);
  a request can never point the server at a path. ``sd-models`` lists them with A1111's
  ``title = "name [sha256[:10]]"``; ``POST options {"sd_model_checkpoint": ...}`` accepts a
  title, a name or a hash, answers 400 for anything else, and switches models otherwise.
* One job at a time: a single worker thread runs generations and model switches from a
  queue of at most ``max_queue`` waiting jobs; a request that finds the queue full gets 429.
* ``POST interrupt`` stops the running job before its next sampling step; ``POST skip``
  stops only the current iteration (of ``n_iter``). The answer is still 200: images of
  finished iterations as usual, plus the partially denoised images of the stopped iteration
  (decoded from the latents of the last finished step, if any). ``info`` then has
  ``"interrupted": true`` (or ``"skipped_iterations"`` > 0), and per image ``partial`` and
  ``sampling_steps_done`` say which images are unfinished and how far they got.
* A client that disconnects while waiting frees its place: a queued job is dropped and a
  running one is interrupted.
* A web UI (``serve/static/``, see :mod:`altdiffusion.serve.ui`) is served at ``/`` unless
  ``create_app(ui=False)``; it calls the same API endpoints as any client.
* Errors are JSON ``{"error": ..., "detail": ...}``: 422 for invalid input (field-level
  ``detail`` list for request validation), 413 for bodies over ``max_body_bytes``, 429 for a
  full queue, 401 without the right ``api_auth`` credentials, 400 for an unknown model.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from fastapi import Body, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from PIL import Image, ImageOps
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from altdiffusion import __version__
from altdiffusion.errors import AltDiffusionError, InvalidInputError
from altdiffusion.pipelines.infotext import format_infotext, parse_infotext, parse_size
from altdiffusion.pipelines.lora import lora_infotext
from altdiffusion.pipelines.samplers import (
    SAMPLERS,
    SCHEDULE_TYPES,
    available_samplers,
    canonical_sampler_name,
    make_scheduler,
)
from altdiffusion.prompts.extra_networks import extract_tags
from altdiffusion.serve.images import BadImage, decode_image, encode_png, text_chunks
from altdiffusion.serve.loras import LoraRegistry
from altdiffusion.serve.middleware import BasicAuthMiddleware, BodyLimitMiddleware, parse_credentials
from altdiffusion.serve.runner import JobState, QueueFull, Worker
from altdiffusion.serve.schemas import (
    GenerationRequest,
    GenerationResponse,
    Img2ImgRequest,
    PNGInfoRequest,
    PNGInfoResponse,
    ProgressResponse,
    SamplerItem,
    SchedulerItem,
    SDModelItem,
    Txt2ImgRequest,
)

logger = logging.getLogger("altdiffusion.serve")

MAX_SEED = 2**32 - 1
DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
DISCONNECT_POLL_S = 0.25


# ----------------------------------------------------------------------------- models


def unet_sha256(folder: Path) -> str | None:
    """sha256 of the UNet weight files, the same bytes ``AltDiffusionPipeline.model_hash`` hashes."""
    files = sorted(Path(folder).glob("unet/diffusion_pytorch_model*"))
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class ModelRegistry:
    """The configured checkpoints (name -> source) and the one loaded pipeline."""

    def __init__(self, models: Mapping[str, str | Path], default: str, *, device, dtype, safety_checker: bool):
        if not isinstance(models, Mapping) or not models:
            raise ValueError("models must be a non-empty mapping of name -> model folder (or hub id / 'mini')")
        for name in models:
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"model names must be non-empty strings, got {name!r}")
        if default not in models:
            raise ValueError(f"default model {default!r} is not one of the configured models: {', '.join(models)}")
        self.sources = {name: models[name] for name in models}
        self.device, self.dtype, self.safety_checker = device, dtype, safety_checker
        self.current = default
        self.pipe = None
        self._lock = threading.Lock()
        self._hash_locks = {name: threading.Lock() for name in self.sources}
        self._folders: dict[str, Path] = {}
        self._sha: dict[str, str | None] = {}

    def resolve_all(self) -> None:
        """Resolve every source now (downloads hub ids once, at startup), so a wrong path fails fast."""
        for name in self.sources:
            self.folder(name)

    def hash_in_background(self) -> threading.Thread:
        """Hash every model's UNet in a daemon thread, so ``sd-models`` answers quickly later."""
        thread = threading.Thread(
            target=lambda: [self.sha256(n) for n in self.sources], name="altdiffusion-hash", daemon=True
        )
        thread.start()
        return thread

    def folder(self, name: str) -> Path:
        from altdiffusion.hub import resolve_model

        with self._lock:
            if name not in self._folders:
                self._folders[name] = resolve_model(self.sources[name], kind="diffusion")
            return self._folders[name]

    def sha256(self, name: str) -> str | None:
        with self._hash_locks[name]:  # one reader of a multi-GB file at a time
            with self._lock:
                if name in self._sha:
                    return self._sha[name]
            try:
                value = unet_sha256(self.folder(name))
            except (AltDiffusionError, OSError) as exc:
                logger.warning("cannot hash model %r: %s", name, exc)
                value = None
            with self._lock:
                self._sha[name] = value
            return value

    def title(self, name: str) -> str:
        sha = self.sha256(name)
        return f"{name} [{sha[:10]}]" if sha else name

    def items(self) -> list[dict[str, Any]]:
        out = []
        for name in self.sources:
            sha = self.sha256(name)
            out.append(
                {
                    "title": self.title(name),
                    "model_name": name,
                    "hash": sha[:10] if sha else None,
                    "sha256": sha,
                    "filename": name,
                    "config": None,
                }
            )
        return out

    def lookup(self, text: str) -> str | None:
        """The configured name a client's checkpoint title/name/hash refers to, or None."""
        text = text.strip()
        if text in self.sources:
            return text
        for name in self.sources:
            sha = self.sha256(name)
            if text == self.title(name) or (sha and text.lower() in (sha[:10], sha[:8], sha)):
                return name
        return None

    def refresh(self) -> None:
        with self._lock:
            self._folders.clear()
            self._sha.clear()

    def load(self, name: str | None = None):
        """Load ``name`` (default: the current one) unless it is already loaded; worker thread only."""
        from altdiffusion.pipelines.alt_diffusion import AltDiffusionPipeline

        name = name or self.current
        if self.pipe is not None and name == self.current:
            return self.pipe
        self.unload()
        pipe = AltDiffusionPipeline.from_pretrained(
            self.folder(name), device=self.device, dtype=self.dtype, safety_checker=self.safety_checker
        )
        pipe.name = name  # infotexts say "Model: <configured name>", as A1111 names checkpoints
        self.pipe, self.current = pipe, name
        logger.info("loaded model %r on %s (%s)", name, pipe.device, pipe.dtype)
        return pipe

    def unload(self) -> None:
        if self.pipe is None:
            return
        self.pipe = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# ------------------------------------------------------------------------------ plans


@dataclass
class Plan:
    """A validated generation request, ready for the worker."""

    kind: str  # "txt2img" or "img2img"
    req: GenerationRequest
    sampler: str
    schedule: str | None  # A1111 schedule type, None for automatic
    init_images: list[Image.Image]
    mask: Image.Image | None
    strength: float | None
    mask_blur: int
    model: str | None = None  # override_settings.sd_model_checkpoint, as a configured name
    loras: list[tuple[Path, float]] = field(default_factory=list)  # from <lora:name:weight> tags
    prompt: str = ""  # the prompt without LoRA tags: what conditions the UNet
    lora_infos: list[dict] = field(default_factory=list)  # filled by the worker as it merges them


def _field_error(field: str | tuple, message: str) -> RequestValidationError:
    loc = ("body", *(field if isinstance(field, tuple) else (field,)))
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": message, "input": None}])


def _schedule_name(text: str | None) -> str | None:
    if text is None or not text.strip():
        return None
    wanted = text.strip().lower().replace("_", " ")
    for label in SCHEDULE_TYPES:
        if label.lower() == wanted:
            return None if label == "Automatic" else label
    raise _field_error("scheduler", f"unknown scheduler {text!r}; use one of: {', '.join(SCHEDULE_TYPES)}")


# ----------------------------------------------------------------------------- the app


class _Server:
    def __init__(self, registry: ModelRegistry, *, max_queue, max_pixels, max_steps, max_batch, loras: LoraRegistry):
        self.models = registry
        self.loras = loras
        self.state = JobState()
        self.worker: Worker | None = None
        self.max_queue = max_queue
        self.max_pixels, self.max_steps, self.max_batch = max_pixels, max_steps, max_batch
        self._preview_lock = threading.Lock()
        self._preview: tuple[int, str | None] = (-1, None)

    # -- request side
    def plan(self, kind: str, req: GenerationRequest, init_images=(), mask=None) -> Plan:
        if req.width * req.height > self.max_pixels:
            raise _field_error(
                "width",
                f"{req.width}x{req.height} is {req.width * req.height} pixels; this server allows at most "
                f"{self.max_pixels} (width x height), e.g. {int(self.max_pixels**0.5) // 8 * 8}x{int(self.max_pixels**0.5) // 8 * 8}",
            )
        if req.steps > self.max_steps:
            raise _field_error("steps", f"steps is {req.steps}; this server allows at most {self.max_steps}")
        if req.batch_size * req.n_iter > self.max_batch:
            raise _field_error(
                "batch_size",
                f"batch_size x n_iter is {req.batch_size * req.n_iter}; this server allows at most "
                f"{self.max_batch} images per request",
            )
        if req.seed > MAX_SEED:
            raise _field_error("seed", f"seed must be at most {MAX_SEED} (or -1 for random)")
        # A1111: sampler_name wins; the legacy sampler_index counts only when sampler_name is not sent.
        sent = req.model_fields_set
        name = req.sampler_index if ("sampler_index" in sent and "sampler_name" not in sent) else req.sampler_name
        try:
            sampler = canonical_sampler_name(name or req.sampler_index or "Euler")
        except InvalidInputError as exc:
            raise _field_error("sampler_name", str(exc)) from None
        schedule = _schedule_name(req.scheduler)
        try:
            make_scheduler(sampler, {}, schedule)  # unsupported combinations fail here, not in the worker
        except InvalidInputError as exc:
            raise _field_error("scheduler" if schedule else "sampler_name", str(exc)) from None
        strength = getattr(req, "denoising_strength", None) if kind == "img2img" else None
        blur = 4
        if kind == "img2img":
            blur = req.mask_blur if req.mask_blur is not None else max(req.mask_blur_x, req.mask_blur_y, 0)
        model = None
        wanted = (req.override_settings or {}).get("sd_model_checkpoint")
        if wanted is not None:
            model = self.models.lookup(wanted) if isinstance(wanted, str) else None
            if model is None:
                raise _field_error(
                    ("override_settings", "sd_model_checkpoint"),
                    f"model {wanted!r} not found; use a title or name from /sdapi/v1/sd-models",
                )
        try:
            prompt, tags = extract_tags(req.prompt)
            loras = [(self.loras.path(name), weight) for name, weight in tags]
        except InvalidInputError as exc:
            raise _field_error("prompt", str(exc)) from None
        return Plan(kind, req, sampler, schedule, list(init_images), mask, strength, int(blur), model, loras, prompt)

    def decode_inputs(self, req: Img2ImgRequest) -> tuple[list[Image.Image], Image.Image | None]:
        limit = max(4 * self.max_pixels, 4096 * 4096)
        images = []
        for i, data in enumerate(req.init_images):
            try:
                images.append(decode_image(data, max_pixels=limit, label=f"init_images[{i}]"))
            except BadImage as exc:
                raise _field_error(("init_images", i), str(exc)) from None
        mask = None
        if req.mask:
            try:
                mask = decode_image(req.mask, max_pixels=limit, label="mask")
            except BadImage as exc:
                raise _field_error("mask", str(exc)) from None
            mask = mask.convert("L")
            if req.inpainting_mask_invert:
                mask = ImageOps.invert(mask)
        return images, mask

    def submit(self, fn) -> Future:
        if self.worker is None:
            raise QueueFull("the server is not running")
        return self.worker.submit(fn)

    async def wait(self, request: Request, future: Future):
        """The job's result; drops or interrupts the job if the client disconnects first."""
        waiter = asyncio.wrap_future(future)
        while True:
            done, _ = await asyncio.wait({waiter}, timeout=DISCONNECT_POLL_S)
            if done:
                return waiter.result()
            if await request.is_disconnected():
                if not future.cancel():
                    self.state.interrupt(future)
                logger.info("client went away; its job was %s", "dropped" if future.cancelled() else "interrupted")
                with contextlib.suppress(BaseException):
                    waiter.cancel()
                return None

    def progress(self, skip_current_image: bool) -> dict[str, Any]:
        snap = self.state.snapshot()
        state = {
            k: snap[k]
            for k in (
                "skipped",
                "interrupted",
                "job",
                "job_count",
                "job_timestamp",
                "job_no",
                "sampling_step",
                "sampling_steps",
            )
        }
        if not snap["job"]:
            return {"progress": 0.0, "eta_relative": 0.0, "state": state, "current_image": None, "textinfo": None}
        per_iter = snap["sampling_step"] / snap["sampling_steps"] if snap["sampling_steps"] else 0.0
        progress = min((snap["job_no"] + per_iter) / max(snap["job_count"], 1), 1.0)
        elapsed = time.monotonic() - snap["started"]
        eta = elapsed / progress - elapsed if progress > 0 else 0.0
        image = None if skip_current_image else self._preview_of(snap)
        text = f"{snap['job']}: iteration {snap['job_no'] + 1}/{snap['job_count']}, step {snap['sampling_step']}/{snap['sampling_steps']}"
        return {"progress": progress, "eta_relative": eta, "state": state, "current_image": image, "textinfo": text}

    def _preview_of(self, snap) -> str | None:
        latents, pipe, version = snap["latents"], snap["pipe"], snap["latents_version"]
        if latents is None or pipe is None:
            return None
        with self._preview_lock:
            if self._preview[0] == version:
                return self._preview[1]
            try:
                with torch.no_grad():
                    pixels = pipe.decode_latents(latents[:1])
                image = Image.fromarray((pixels[0] * 255).round().astype("uint8"))
                encoded = encode_png(image)
            except Exception as exc:
                logger.debug("preview failed: %s", exc)
                encoded = None
            self._preview = (version, encoded)
            return encoded

    # -- worker side
    def generate(self, plan: Plan, future: Future) -> dict[str, Any]:
        previous = self.models.current
        pipe = self.models.load(plan.model)
        try:
            plan.lora_infos = [pipe.load_lora(path, weight) for path, weight in plan.loras]
            return self._generate(plan, pipe, future)
        finally:
            if plan.loras:
                pipe.unload_lora()  # the next job starts from the model's own weights
            if plan.model and plan.model != previous and plan.req.override_settings_restore_afterwards:
                self.models.load(previous)

    def _generate(self, plan: Plan, pipe, future: Future) -> dict[str, Any]:
        from altdiffusion.pipelines.alt_diffusion import GenerationInterrupted

        req = plan.req
        seed = req.seed if req.seed >= 0 else random.randint(0, MAX_SEED)
        batch, n_iter = req.batch_size, req.n_iter
        state = self.state
        state.begin(plan.kind, n_iter, future, pipe)
        images: list[Image.Image] = []
        infotexts: list[str] = []
        seeds: list[int] = []
        nsfw: list[bool] = []
        partial: list[bool] = []
        steps_done: list[int] = []
        skipped_iterations = 0
        interrupted = False
        try:
            for it in range(n_iter):
                state.next_iteration(it)
                if state.interrupted:
                    interrupted = True
                    break
                first = (seed + it * batch) % (MAX_SEED + 1)
                if len(plan.init_images) <= 1:
                    units = [(first, batch, plan.init_images[0] if plan.init_images else None)]
                else:  # A1111: image i of a batch starts from init_images[i % n]
                    units = [
                        ((first + i) % (MAX_SEED + 1), 1, plan.init_images[i % len(plan.init_images)])
                        for i in range(batch)
                    ]
                for unit_seed, count, init in units:
                    state.next_unit()
                    try:
                        result = self._call(pipe, plan, unit_seed, count, init)
                    except GenerationInterrupted:
                        snap = state.snapshot()
                        if snap["latents"] is not None:
                            with torch.no_grad():
                                pixels = pipe.decode_latents(snap["latents"])
                            for i, p in enumerate(pixels):
                                images.append(Image.fromarray((p * 255).round().astype("uint8")))
                                s = (unit_seed + i) % (MAX_SEED + 1)
                                infotexts.append(self._infotext(pipe, plan, s))
                                seeds.append(s)
                                nsfw.append(False)
                                partial.append(True)
                                steps_done.append(snap["sampling_step"])
                        if snap["interrupted"]:
                            interrupted = True
                        else:
                            skipped_iterations += 1
                        break
                    images.extend(result.images)
                    infotexts.extend(self._fix_infotext(t, plan) for t in result.infotexts)
                    seeds.extend(result.seeds)
                    nsfw.extend(result.nsfw or [False] * len(result.images))
                    partial.extend([False] * len(result.images))
                    steps_done.extend([state.snapshot()["sampling_steps"]] * len(result.images))
                if interrupted:
                    break
            timestamp = state.snapshot()["job_timestamp"]
        finally:
            state.end()
        return self._response(
            plan,
            pipe,
            seed,
            images,
            infotexts,
            seeds,
            nsfw,
            partial,
            steps_done,
            interrupted,
            skipped_iterations,
            timestamp,
        )

    def _call(self, pipe, plan: Plan, seed: int, count: int, init):
        req = plan.req
        kwargs = dict(
            prompt=plan.prompt,
            negative_prompt=req.negative_prompt,
            num_inference_steps=req.steps,
            guidance_scale=float(req.cfg_scale),
            height=req.height,
            width=req.width,
            seed=seed,
            num_images_per_prompt=count,
            sampler=plan.sampler,
            eta=req.eta or 0.0,
            progress=False,
            callback=lambda step, total, latents: self.state.step(step, total, latents.detach().clone()),
            should_stop=self.state.should_stop,
        )
        if init is not None:
            mask = plan.mask
            if mask is not None and mask.size != init.size:
                mask = mask.resize(init.size, Image.NEAREST)
            kwargs.update(
                image=init.convert("RGB"), strength=float(plan.strength), mask_image=mask, mask_blur=plan.mask_blur
            )
        if plan.schedule is None:
            return pipe(**kwargs)
        # The pipeline takes a sampler name only; a schedule type needs a scheduler built here.
        original = pipe.scheduler
        pipe.scheduler = make_scheduler(plan.sampler, original.config, plan.schedule)
        try:
            kwargs["sampler"] = None
            return pipe(**kwargs)
        finally:
            pipe.scheduler = original

    def _fix_infotext(self, text: str, plan: Plan) -> str:
        if plan.schedule is None and not plan.loras:
            return text
        _, negative, params = parse_infotext(text)
        fixed: dict[str, object] = {}
        for key, value in params.items():
            fixed[key] = plan.sampler if key == "Sampler" and plan.schedule else value
            if key == "Sampler" and plan.schedule:
                fixed["Schedule type"] = plan.schedule
        # A1111 keeps the <lora:...> tags in the infotext's prompt and names the files' hashes.
        return lora_infotext(format_infotext(plan.req.prompt, negative, fixed), plan.lora_infos)

    def _infotext(self, pipe, plan: Plan, seed: int) -> str:
        req = plan.req
        params = {
            "Steps": req.steps,
            "Sampler": plan.sampler,
            "Schedule type": plan.schedule,
            "CFG scale": float(req.cfg_scale),
            "Seed": seed,
            "Size": f"{req.width}x{req.height}",
            "Model hash": pipe.model_hash,
            "Model": pipe.name or None,
            "Denoising strength": plan.strength,
            "Mask blur": plan.mask_blur if plan.mask is not None else None,
            "Version": f"altdiffusion {__version__}",
        }
        return lora_infotext(format_infotext(req.prompt, req.negative_prompt, params), plan.lora_infos)

    def _response(
        self,
        plan,
        pipe,
        seed,
        images,
        infotexts,
        seeds,
        nsfw,
        partial,
        steps_done,
        interrupted,
        skipped_iterations,
        timestamp,
    ) -> dict[str, Any]:
        req = plan.req
        total = req.batch_size * req.n_iter
        all_seeds = [(seed + i) % (MAX_SEED + 1) for i in range(total)]
        info = {
            "prompt": req.prompt,
            "all_prompts": [req.prompt] * total,
            "negative_prompt": req.negative_prompt,
            "all_negative_prompts": [req.negative_prompt] * total,
            "seed": seed,
            "all_seeds": all_seeds,
            "subseed": -1,
            "all_subseeds": [-1] * total,
            "subseed_strength": 0,
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
            "sd_model_name": pipe.name,
            "sd_model_hash": pipe.model_hash,
            "sd_vae_name": None,
            "sd_vae_hash": None,
            "seed_resize_from_w": -1,
            "seed_resize_from_h": -1,
            "denoising_strength": plan.strength,
            "extra_generation_params": {"Mask blur": plan.mask_blur} if plan.mask is not None else {},
            "index_of_first_image": 0,
            "infotexts": infotexts,
            "styles": req.styles or [],
            "job_timestamp": timestamp,
            "clip_skip": 1,
            "is_using_inpainting_conditioning": False,
            "version": f"altdiffusion {__version__}",
            "image_seeds": seeds,
            "nsfw": nsfw,
            "partial": partial,
            "sampling_steps_done": steps_done,
            "interrupted": interrupted,
            "skipped_iterations": skipped_iterations,
        }
        encoded = [encode_png(img, text) for img, text in zip(images, infotexts)] if req.send_images else []
        echo = req.model_dump()
        echo["sampler_name"] = plan.sampler
        if plan.kind == "img2img" and not getattr(req, "include_init_images", False):
            echo["init_images"] = None
            echo["mask"] = None
        return {"images": encoded, "parameters": echo, "info": json.dumps(info, ensure_ascii=False)}

    def switch(self, name: str, future: Future) -> None:
        self.models.load(name)


def _memory() -> dict[str, Any]:
    ram: dict[str, Any]
    try:
        import psutil

        vm = psutil.virtual_memory()
        ram = {"free": vm.available, "used": vm.total - vm.available, "total": vm.total}
    except Exception:
        try:
            page = os.sysconf("SC_PAGE_SIZE")
            total, free = page * os.sysconf("SC_PHYS_PAGES"), page * os.sysconf("SC_AVPHYS_PAGES")
            ram = {"free": free, "used": total - free, "total": total}
        except (AttributeError, ValueError, OSError) as exc:
            ram = {"error": f"cannot read system memory: {exc}"}
    if not torch.cuda.is_available():
        return {"ram": ram, "cuda": {"error": "CUDA is not available"}}
    try:
        free, total = torch.cuda.mem_get_info()
        stats = torch.cuda.memory_stats()
        cuda = {
            "system": {"free": free, "used": total - free, "total": total},
            "active": {
                "current": stats.get("active_bytes.all.current", 0),
                "peak": stats.get("active_bytes.all.peak", 0),
            },
            "allocated": {
                "current": stats.get("allocated_bytes.all.current", 0),
                "peak": stats.get("allocated_bytes.all.peak", 0),
            },
            "reserved": {
                "current": stats.get("reserved_bytes.all.current", 0),
                "peak": stats.get("reserved_bytes.all.peak", 0),
            },
            "inactive": {
                "current": stats.get("inactive_split_bytes.all.current", 0),
                "peak": stats.get("inactive_split_bytes.all.peak", 0),
            },
            "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)},
        }
    except Exception as exc:
        cuda = {"error": str(exc)}
    return {"ram": ram, "cuda": cuda}


def _clean_errors(errors) -> list[dict[str, Any]]:
    """Field-level messages without echoing the (possibly huge) input back."""
    out = []
    for err in errors:
        loc = [part if isinstance(part, (str, int)) else str(part) for part in err.get("loc", ())]
        out.append({"loc": loc, "msg": str(err.get("msg", "")), "type": str(err.get("type", "value_error"))})
    return out


def _error(status: int, error: str, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def create_app(
    models: Mapping[str, str | Path],
    *,
    default: str,
    device=None,
    dtype=None,
    max_queue: int = 8,
    max_pixels: int = 1024 * 1024,
    max_steps: int = 150,
    max_batch: int = 8,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    api_auth: str | None = None,
    safety_checker: bool = True,
    preload: bool = True,
    ui: bool = True,
    lora_dir: str | Path | None = None,
) -> FastAPI:
    """The FastAPI application serving ``models`` (configured name -> folder, hub id or "mini").

    ``default`` is loaded first (at once when ``preload``, else with the first job).
    ``api_auth="user:password"`` requires HTTP Basic auth on every route.
    ``ui`` serves the web UI at ``/`` (static files calling the same API).
    ``lora_dir`` holds the LoRA files prompts may name with ``<lora:name:weight>``.
    """
    for label, value in (
        ("max_queue", max_queue),
        ("max_pixels", max_pixels),
        ("max_steps", max_steps),
        ("max_batch", max_batch),
        ("max_body_bytes", max_body_bytes),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{label} must be a whole number >= 1, got {value!r}")
    credentials = parse_credentials(api_auth) if api_auth is not None else None
    registry = ModelRegistry(models, default, device=device, dtype=dtype, safety_checker=safety_checker)
    registry.resolve_all()
    if preload:
        registry.load(default)
    loras = LoraRegistry(lora_dir)
    server = _Server(
        registry, max_queue=max_queue, max_pixels=max_pixels, max_steps=max_steps, max_batch=max_batch, loras=loras
    )
    server.worker = Worker(max_queue)
    registry.hash_in_background()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if server.worker is None or not server.worker.alive():  # served again after a shutdown
            server.worker = Worker(max_queue)
        yield
        server.state.interrupt()
        if server.worker is not None:
            await run_in_threadpool(server.worker.stop)

    app = FastAPI(
        title="altdiffusion API",
        description="AUTOMATIC1111-compatible HTTP API (`/sdapi/v1/`) for AltDiffusion.",
        version=__version__,
        lifespan=lifespan,
    )
    app.state.server = server

    # ------------------------------------------------------------------ errors
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return _error(422, "RequestValidationError", _clean_errors(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        names = {401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge"}
        return _error(
            exc.status_code, names.get(exc.status_code, "HTTPException"), exc.detail, getattr(exc, "headers", None)
        )

    @app.exception_handler(QueueFull)
    async def _queue_full(request: Request, exc: QueueFull):
        return _error(429, "QueueFull", f"queue full: {exc}; retry later", {"Retry-After": "1"})

    @app.exception_handler(InvalidInputError)
    async def _invalid(request: Request, exc: InvalidInputError):
        return _error(422, "InvalidInputError", str(exc))

    @app.exception_handler(AltDiffusionError)
    async def _altdiffusion(request: Request, exc: AltDiffusionError):
        return _error(400, type(exc).__name__, str(exc))

    @app.exception_handler(torch.cuda.OutOfMemoryError)
    async def _oom(request: Request, exc: Exception):
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return _error(503, "OutOfMemoryError", "out of GPU memory; try a smaller size or batch", {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        logger.exception("unexpected error on %s", request.url.path)
        return _error(500, type(exc).__name__, str(exc) or "internal error")

    # ------------------------------------------------------------------ generation
    prefix = "/sdapi/v1"

    async def _run(request: Request, fn):
        future = server.submit(fn)
        result = await server.wait(request, future)
        if result is None:
            return Response(status_code=499)
        return result

    @app.post(f"{prefix}/txt2img", response_model=GenerationResponse, tags=["generation"])
    async def txt2img(req: Txt2ImgRequest, request: Request):
        plan = await run_in_threadpool(server.plan, "txt2img", req)
        return await _run(request, lambda fut: server.generate(plan, fut))

    @app.post(f"{prefix}/img2img", response_model=GenerationResponse, tags=["generation"])
    async def img2img(req: Img2ImgRequest, request: Request):
        plan = await run_in_threadpool(server.plan, "img2img", req)  # cheap checks before decoding images
        plan.init_images, plan.mask = await run_in_threadpool(server.decode_inputs, req)
        return await _run(request, lambda fut: server.generate(plan, fut))

    @app.get(f"{prefix}/progress", response_model=ProgressResponse, tags=["progress"])
    def progress(skip_current_image: bool = Query(False)):
        return server.progress(skip_current_image)

    @app.post(f"{prefix}/interrupt", tags=["progress"])
    def interrupt():
        server.state.interrupt()
        return {}

    @app.post(f"{prefix}/skip", tags=["progress"])
    def skip():
        server.state.skip()
        return {}

    # ------------------------------------------------------------------ models and options
    @app.get(f"{prefix}/options", tags=["options"])
    def get_options():
        name = registry.current
        return {
            "sd_model_checkpoint": registry.title(name),
            "sd_checkpoint_hash": registry.sha256(name),
            "samples_format": "png",
            "live_previews_enable": True,
            "CLIP_stop_at_last_layers": 1,
            "eta_noise_seed_delta": 0,
            "sd_checkpoints_limit": 1,
        }

    @app.post(f"{prefix}/options", tags=["options"])
    async def set_options(request: Request, options: dict[str, Any] = Body(...)):
        wanted = options.get("sd_model_checkpoint")
        if wanted is None:
            return None  # other settings are accepted and ignored
        if not isinstance(wanted, str):
            raise _field_error("sd_model_checkpoint", "must be a checkpoint title or name (a string)")
        name = await run_in_threadpool(registry.lookup, wanted)
        if name is None:
            known = ", ".join(item["title"] for item in await run_in_threadpool(registry.items))
            return _error(400, "ModelNotFound", f"model {wanted!r} not found; known checkpoints: {known}")
        if name != registry.current or registry.pipe is None:
            await _run(request, lambda fut: server.switch(name, fut))
        return None

    @app.get(f"{prefix}/sd-models", response_model=list[SDModelItem], tags=["models"])
    def sd_models():
        return registry.items()

    @app.post(f"{prefix}/refresh-checkpoints", tags=["models"])
    def refresh_checkpoints():
        registry.refresh()
        return None

    @app.post(f"{prefix}/unload-checkpoint", tags=["models"])
    async def unload_checkpoint(request: Request):
        await _run(request, lambda fut: registry.unload())
        return None

    @app.post(f"{prefix}/reload-checkpoint", tags=["models"])
    async def reload_checkpoint(request: Request):
        await _run(request, lambda fut: registry.load())
        return None

    @app.get(f"{prefix}/loras", tags=["models"])
    def list_loras():
        return loras.items()

    @app.post(f"{prefix}/refresh-loras", tags=["models"])
    def refresh_loras():
        loras.refresh()
        return None

    @app.get(f"{prefix}/samplers", response_model=list[SamplerItem], tags=["models"])
    def samplers():
        return [
            {
                "name": name,
                "aliases": list(SAMPLERS[name].aliases),
                "options": {k: str(v) for k, v in SAMPLERS[name].kwargs.items()},
            }
            for name in available_samplers()
        ]

    @app.get(f"{prefix}/schedulers", response_model=list[SchedulerItem], tags=["models"])
    def schedulers():
        return [
            {
                "name": label.lower().replace(" ", "_"),
                "label": label,
                "aliases": None,
                "default_rho": 7.0 if label == "Karras" else -1,
                "need_inner_model": label in ("Uniform", "SGM Uniform"),
            }
            for label in SCHEDULE_TYPES
        ]

    # ------------------------------------------------------------------ utilities
    @app.post(f"{prefix}/png-info", response_model=PNGInfoResponse, tags=["utilities"])
    def png_info(req: PNGInfoRequest):
        if not req.image.strip():
            return {"info": "", "items": {}, "parameters": {}}
        try:
            image = decode_image(req.image, max_pixels=max(4 * max_pixels, 4096 * 4096), label="image")
        except BadImage as exc:
            raise _field_error("image", str(exc)) from None
        items = text_chunks(image)
        info = items.get("parameters", "")
        parameters: dict[str, Any] = {}
        if info:
            prompt, negative, params = parse_infotext(info)
            parameters = {"Prompt": prompt, "Negative prompt": negative, **params}
            if "Size" in params:
                with contextlib.suppress(InvalidInputError):
                    w, h = parse_size(params["Size"])
                    parameters["Size-1"], parameters["Size-2"] = str(w), str(h)
        return {"info": info, "items": items, "parameters": parameters}

    @app.get(f"{prefix}/memory", tags=["utilities"])
    def memory():
        return _memory()

    if ui:
        from altdiffusion.serve.ui import add_ui

        add_ui(app)

    # Middleware: the last added runs first, so auth is checked before the body is read.
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    if credentials is not None:
        app.add_middleware(BasicAuthMiddleware, credentials=credentials)
    return app
