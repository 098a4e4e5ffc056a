"""txt2img, img2img, and the running job: progress, interrupt, skip."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from altdiffusion.serve.routes import API_PREFIX, service_of
from altdiffusion.serve.schemas import GenerationResponse, Img2ImgRequest, ProgressResponse, Txt2ImgRequest
from altdiffusion.serve.service import Service

router = APIRouter(prefix=API_PREFIX)


@router.post("/txt2img", response_model=GenerationResponse, tags=["generation"])
async def txt2img(req: Txt2ImgRequest, request: Request, service: Service = Depends(service_of)):
    plan = await run_in_threadpool(service.planner.plan, "txt2img", req)
    return await service.generate(request, plan)


@router.post("/img2img", response_model=GenerationResponse, tags=["generation"])
async def img2img(req: Img2ImgRequest, request: Request, service: Service = Depends(service_of)):
    plan = await run_in_threadpool(service.planner.plan, "img2img", req)  # cheap checks before decoding images
    plan = await run_in_threadpool(service.planner.with_images, plan, req)
    return await service.generate(request, plan)


@router.get("/progress", response_model=ProgressResponse, tags=["progress"])
def progress(skip_current_image: bool = Query(False), service: Service = Depends(service_of)):
    return service.progress.report(skip_current_image)


@router.post("/interrupt", tags=["progress"])
def interrupt(service: Service = Depends(service_of)):
    service.state.interrupt()
    return {}


@router.post("/skip", tags=["progress"])
def skip(service: Service = Depends(service_of)):
    service.state.skip()
    return {}
