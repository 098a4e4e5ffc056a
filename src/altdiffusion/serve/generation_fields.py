"""A request's A1111 noise and hires-fix fields, checked (422 naming the field) and turned into pipeline settings.

Variation seeds (``subseed``, ``subseed_strength``, ``seed_resize_from_h/w``), the noise source
(``override_settings.randn_source``) and the hires fix (``enable_hr`` and the ``hr_*`` fields)
are honoured as A1111 honours them; a hires pass A1111 would run with another checkpoint,
sampler, schedule or prompt is refused rather than run with the first pass's.
"""

from __future__ import annotations

from altdiffusion.errors import InvalidInputError
from altdiffusion.pipelines.hires import HiresFix, HiresPlan, plan_hires
from altdiffusion.pipelines.noise import check_randn_source
from altdiffusion.serve.errors import field_error
from altdiffusion.serve.schemas import GenerationRequest, Txt2ImgRequest

# A1111's web UI sends these for "the same as the first pass"
_SAME = {"": None, "Use same checkpoint": None, "Use same sampler": None, "Use same scheduler": None}
A1111_TXT2IMG_DENOISING = 0.75  # StableDiffusionProcessingTxt2Img's default


def randn_source(req: GenerationRequest) -> str:
    """``override_settings.randn_source`` ("CPU" when left out)."""
    wanted = (req.override_settings or {}).get("randn_source", "CPU")
    try:
        return check_randn_source(wanted)
    except InvalidInputError as exc:
        raise field_error(("override_settings", "randn_source"), str(exc)) from None


def seed_resize(req: GenerationRequest) -> tuple[int, int]:
    """(height, width) of "Seed resize from"; (0, 0) when off. Only one of them above 0 is refused."""
    h, w = req.seed_resize_from_h, req.seed_resize_from_w
    if (h > 0) != (w > 0):
        raise field_error(
            "seed_resize_from_w", f"send both seed_resize_from_h and _w above 0 (or neither), got {w}x{h}"
        )
    return (h, w) if h > 0 else (0, 0)


def hires_fix(req: GenerationRequest, sampler: str, schedule: str | None) -> HiresFix | None:
    """The request's hires fix, or None when ``enable_hr`` is false (or the request is img2img)."""
    if not isinstance(req, Txt2ImgRequest) or not req.enable_hr:
        return None
    _check_same_pass(req, sampler, schedule)
    return HiresFix(
        scale=req.hr_scale,
        resize_x=req.hr_resize_x,
        resize_y=req.hr_resize_y,
        upscaler=req.hr_upscaler or None,
        steps=req.hr_second_pass_steps,
        denoising_strength=req.denoising_strength if req.denoising_strength is not None else A1111_TXT2IMG_DENOISING,
    )


def hires_plan(req: GenerationRequest, hires: HiresFix) -> HiresPlan:
    """Where the hires fix lands (target size, steps), for the server's limits; 422 on a bad setting."""
    try:
        return plan_hires(hires, req.width, req.height, req.steps, 8)
    except InvalidInputError as exc:
        message = str(exc)
        field = (
            "hr_upscaler" if "upscaler" in message else "denoising_strength" if "denoising" in message else "hr_scale"
        )
        raise field_error(field, str(exc)) from None


def _check_same_pass(req: Txt2ImgRequest, sampler: str, schedule: str | None) -> None:
    if req.firstphase_width or req.firstphase_height:
        raise field_error("firstphase_width", "A1111's old hires fix is not supported; send 0 and use hr_scale")
    if _SAME.get(req.hr_checkpoint_name or "", req.hr_checkpoint_name):
        raise field_error("hr_checkpoint_name", "the second pass runs on the same model; leave hr_checkpoint_name out")
    others = (
        ("hr_sampler_name", req.hr_sampler_name, sampler),
        ("hr_scheduler", req.hr_scheduler, schedule or "Automatic"),
        ("hr_prompt", req.hr_prompt, req.prompt),
        ("hr_negative_prompt", req.hr_negative_prompt, req.negative_prompt),
    )
    for name, value, first in others:
        if name == "hr_sampler_name" and _SAME.get(value or "", value):
            value = _canonical_sampler(value)
        if _SAME.get(value or "", value) and value != first:
            raise field_error(name, f"the second pass uses the first pass's {name[3:]}; leave {name} out")


def _canonical_sampler(name: str) -> str:
    from altdiffusion.pipelines.samplers import canonical_sampler_name

    try:
        return canonical_sampler_name(name)
    except InvalidInputError as exc:
        raise field_error("hr_sampler_name", str(exc)) from None
