"""Models, options, LoRAs, samplers and schedule types."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Request
from starlette.concurrency import run_in_threadpool

from altdiffusion.pipelines.samplers import SAMPLERS, SCHEDULE_TYPES, available_samplers
from altdiffusion.serve.errors import error_response, field_error
from altdiffusion.serve.registry import OWN_VAE_CHOICES
from altdiffusion.serve.routes import API_PREFIX, service_of
from altdiffusion.serve.schemas import SamplerItem, SchedulerItem, SDModelItem
from altdiffusion.serve.service import Service

router = APIRouter(prefix=API_PREFIX)


@router.get("/options", tags=["options"])
def get_options(service: Service = Depends(service_of)):
    name = service.models.current
    return {
        "sd_model_checkpoint": service.models.title(name),
        "sd_checkpoint_hash": service.models.sha256(name),
        "sd_vae": service.models.vae,
        "samples_format": "png",
        "live_previews_enable": True,
        "CLIP_stop_at_last_layers": 1,
        "eta_noise_seed_delta": 0,
        "sd_checkpoints_limit": 1,
    }


@router.post("/options", tags=["options"])
async def set_options(request: Request, options: dict[str, Any] = Body(...), service: Service = Depends(service_of)):
    """Switches models on ``sd_model_checkpoint`` (a title, name or hash) and VAEs on ``sd_vae``;
    other settings are ignored."""
    if "sd_vae" in options:
        await _set_vae(request, options["sd_vae"], service)
    wanted = options.get("sd_model_checkpoint")
    if wanted is None:
        return None
    if not isinstance(wanted, str):
        raise field_error("sd_model_checkpoint", "must be a checkpoint title or name (a string)")
    models = service.models
    name = await run_in_threadpool(models.lookup, wanted)
    if name is None:
        known = ", ".join(item["title"] for item in await run_in_threadpool(models.items))
        return error_response(400, "ModelNotFound", f"model {wanted!r} not found; known checkpoints: {known}")
    if name != models.current or models.pipe is None:
        await service.run(request, lambda future: models.load(name))  # in line with the queued jobs
    return None


async def _set_vae(request: Request, wanted: object, service: Service) -> None:
    models = service.models
    if not isinstance(wanted, str) or (wanted not in models.vaes and wanted not in OWN_VAE_CHOICES):
        known = ", ".join([*OWN_VAE_CHOICES, *models.vaes])
        raise field_error("sd_vae", f"must be one of the configured VAEs: {known}")
    if wanted != models.vae:
        await service.run(request, lambda future: models.set_vae(wanted))  # in line with the queued jobs


@router.get("/sd-vae", tags=["models"])
def sd_vae(service: Service = Depends(service_of)):
    return service.models.vae_items()


@router.get("/sd-models", response_model=list[SDModelItem], tags=["models"])
def sd_models(service: Service = Depends(service_of)):
    return service.models.items()


@router.post("/refresh-checkpoints", tags=["models"])
def refresh_checkpoints(service: Service = Depends(service_of)):
    service.models.refresh()
    return None


@router.post("/unload-checkpoint", tags=["models"])
async def unload_checkpoint(request: Request, service: Service = Depends(service_of)):
    await service.run(request, lambda future: service.models.unload())
    return None


@router.post("/reload-checkpoint", tags=["models"])
async def reload_checkpoint(request: Request, service: Service = Depends(service_of)):
    await service.run(request, lambda future: service.models.load())
    return None


@router.get("/loras", tags=["models"])
def list_loras(service: Service = Depends(service_of)):
    return service.loras.items()


@router.post("/refresh-loras", tags=["models"])
def refresh_loras(service: Service = Depends(service_of)):
    service.loras.refresh()
    return None


@router.get("/embeddings", tags=["models"])
def list_embeddings(service: Service = Depends(service_of)):
    """A1111's ``loaded``/``skipped`` listing for the loaded model (both empty before a model loads)."""
    pipe = service.models.pipe
    return pipe.embeddings.listing() if pipe is not None else {"loaded": {}, "skipped": {}}


@router.post("/refresh-embeddings", tags=["models"])
async def refresh_embeddings(request: Request, service: Service = Depends(service_of)):
    models = service.models
    if models.pipe is not None:
        await service.run(request, lambda future: models.load_embeddings(models.pipe))  # between jobs
    return None


@router.get("/samplers", response_model=list[SamplerItem], tags=["models"])
def samplers():
    return [
        {
            "name": name,
            "aliases": list(SAMPLERS[name].aliases),
            "options": {k: str(v) for k, v in SAMPLERS[name].kwargs.items()},
        }
        for name in available_samplers()
    ]


@router.get("/schedulers", response_model=list[SchedulerItem], tags=["models"])
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
