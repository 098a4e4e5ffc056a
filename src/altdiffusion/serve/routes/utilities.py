"""png-info and memory."""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter, Depends

from altdiffusion.errors import InvalidInputError
from altdiffusion.pipelines.infotext import parse_infotext, parse_size
from altdiffusion.serve.images import BadImage, read_image, text_chunks
from altdiffusion.serve.memory import memory_stats
from altdiffusion.serve.routes import API_PREFIX, service_of
from altdiffusion.serve.schemas import PNGInfoRequest, PNGInfoResponse
from altdiffusion.serve.service import Service

router = APIRouter(prefix=API_PREFIX)


@router.post("/png-info", response_model=PNGInfoResponse, response_model_exclude_none=True, tags=["utilities"])
def png_info(req: PNGInfoRequest, service: Service = Depends(service_of)):
    """The infotext an image carries (A1111 reads ``image.info``). Text that is not base64 is a 422;
    base64 that is not a readable image answers empty ``info`` with the ``reason``."""
    if not req.image.strip():
        return {"info": "", "items": {}, "parameters": {}}
    try:  # the header only: the text chunks come before the pixels, which are never decoded here
        image = read_image(req.image, max_pixels=service.planner.decode_limit, field=("image",))
    except BadImage as exc:  # schema-valid base64 that is not an image has no info; say why
        return {"info": "", "items": {}, "parameters": {}, "reason": str(exc)}
    items = text_chunks(image.open())
    info = items.get("parameters", "")
    return {"info": info, "items": items, "parameters": infotext_fields(info) if info else {}}


def infotext_fields(infotext: str) -> dict[str, Any]:
    """A1111's png-info ``parameters``: the infotext's fields, with WxH sizes also split in two
    (``Size-1``, ``Size-2``, ``Seed resize from-1``...)."""
    prompt, negative, params = parse_infotext(infotext)
    fields = {"Prompt": prompt, "Negative prompt": negative, **params}
    for key in ("Size", "Seed resize from", "Hires resize"):
        if key in params:
            with contextlib.suppress(InvalidInputError):
                width, height = parse_size(params[key])
                fields[f"{key}-1"], fields[f"{key}-2"] = str(width), str(height)
    return fields


@router.get("/memory", tags=["utilities"])
def memory():
    return memory_stats()
