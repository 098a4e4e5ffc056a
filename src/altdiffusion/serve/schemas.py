"""Request and response bodies of the AUTOMATIC1111-compatible API (``/sdapi/v1/``).

Field names and defaults follow A1111's ``StableDiffusionTxt2ImgProcessingAPI`` and
``StableDiffusionImg2ImgProcessingAPI``. Fields that A1111 clients commonly send but that
this server does not implement (face restoration, tiling, extra networks...) are
accepted and ignored; unknown fields are ignored too, as A1111 does. Settings that would
silently produce a different picture than asked for (scripts, a hires pass with another
sampler, prompt or checkpoint) are refused with 422 instead.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_PROMPT_CHARS = 20_000


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class GenerationRequest(_Lenient):
    """Fields shared by txt2img and img2img."""

    prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    negative_prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    styles: list[str] | None = Field(None, description="accepted and ignored (no saved styles here)")
    seed: int = Field(-1, description="-1 picks a random seed; image i of the job uses seed + i")
    subseed: int = Field(-1, description="variation seed; -1 picks one; image i of the job uses subseed + i")
    subseed_strength: float = Field(
        0.0, ge=0.0, le=1.0, description="0..1 towards the variation seed's noise (A1111's slerp); 0: off"
    )
    seed_resize_from_h: int = Field(-1, description="with seed_resize_from_w: the seed's noise drawn at this size")
    seed_resize_from_w: int = Field(-1, description="<= 0: off")
    sampler_name: str | None = Field(
        "Euler", description='A1111 sampler name or alias, e.g. "Euler a"; left out: the model\'s (see sd-models)'
    )
    sampler_index: str = Field(
        "Euler", description="legacy spelling of sampler_name, used when sampler_name is not sent"
    )
    scheduler: str | None = Field(None, description='A1111 schedule type ("Automatic", "Karras"...)')
    batch_size: int = Field(1, ge=1, description="images per iteration")
    n_iter: int = Field(1, ge=1, description="iterations (batches) per job")
    # Left out, these four and sampler_name are the model's defaults (sd-models lists them): A1111's
    # 512x512 is Stable Diffusion 1.x's native size, and the bundled mini model's is 64x64.
    steps: int = Field(50, ge=1, description="left out: the model's default (sd-models)")
    cfg_scale: float = Field(7.0, description="left out: the model's default (sd-models)")
    width: int = Field(512, ge=8, multiple_of=8, description="left out: the model's native width (sd-models)")
    height: int = Field(512, ge=8, multiple_of=8, description="left out: the model's native height (sd-models)")
    restore_faces: bool | None = Field(None, description="accepted and ignored")
    tiling: bool | None = Field(None, description="accepted and ignored")
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = Field(
        None,
        description="sd_model_checkpoint (a configured model for this job) and randn_source "
        '("CPU" or "GPU") are honoured; the rest is ignored',
    )
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    comments: dict[str, Any] | None = None
    force_task_id: str | None = None
    script_name: str | None = Field(None, description="scripts are not supported; must be empty")
    script_args: list[Any] = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = Field(False, description="accepted and ignored: the server never writes files")
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict, description="accepted and ignored")
    infotext: str | None = None

    @field_validator("cfg_scale", "eta")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("script_name")
    @classmethod
    def _no_scripts(cls, value: str | None) -> str | None:
        if value:
            raise ValueError(f"scripts are not supported by this server (got {value!r}); leave script_name empty")
        return value


class Txt2ImgRequest(GenerationRequest):
    enable_hr: bool = Field(False, description="hires fix: upscale, then a second image-to-image pass")
    denoising_strength: float | None = Field(
        None, ge=0.0, le=1.0, description="hires fix's second pass (above 0); left out: 0.75 (A1111's default)"
    )
    firstphase_width: int = Field(0, description="A1111's old hires fix; must be 0 (use hr_scale / hr_resize_x/y)")
    firstphase_height: int = Field(0, description="must be 0")
    hr_scale: float = Field(2.0, gt=0.0, description="upscale factor when hr_resize_x and hr_resize_y are 0")
    hr_upscaler: str | None = Field(None, description='"Latent" (default), "Latent (bicubic)"..., "Lanczos", "Nearest"')
    hr_second_pass_steps: int = Field(0, ge=0, description="0: the same as steps")
    hr_resize_x: int = Field(0, ge=0, description="target width (0: from hr_resize_y and the aspect ratio)")
    hr_resize_y: int = Field(0, ge=0, description="target height")
    hr_checkpoint_name: str | None = Field(None, description="must be empty: the second pass uses the same model")
    hr_sampler_name: str | None = Field(None, description="empty or the same as sampler_name")
    hr_scheduler: str | None = Field(None, description="empty or the same as scheduler")
    hr_prompt: str = Field("", max_length=MAX_PROMPT_CHARS, description="empty or the same as prompt")
    hr_negative_prompt: str = Field("", max_length=MAX_PROMPT_CHARS, description="empty or the same as negative_prompt")

    @field_validator("hr_scale")
    @classmethod
    def _finite_scale(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class Img2ImgRequest(GenerationRequest):
    init_images: list[str] = Field(
        ..., min_length=1, description="base64 images (raw or data:image/...;base64,); URLs are refused"
    )
    resize_mode: int = Field(0, description="only 0 (just resize) is implemented; others are treated as 0")
    image_cfg_scale: float | None = None
    mask: str | None = Field(None, description="base64 mask; white = repaint")
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = Field(4, ge=0, le=64)
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = Field(0, ge=0, le=1, description="1: repaint the black part of the mask")
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool = Field(False, description="echo init_images and mask back in `parameters`")
    denoising_strength: float = Field(0.75, ge=0.0, le=1.0)


class GenerationResponse(BaseModel):
    images: list[str] | None = Field(None, description="base64 PNGs carrying the A1111 `parameters` text chunk")
    parameters: dict[str, Any]
    info: str = Field(..., description="JSON string: prompt, all_seeds, infotexts, interrupted...")


# base64 text, raw or as a data URL; whitespace (line breaks) allowed, padding optional
BASE64_IMAGE = r"^\s*(data:[\w.+-]+/[\w.+-]+(;[\w=.+-]+)*;base64,)?[A-Za-z0-9+/=\s]*$"


class PNGInfoRequest(_Lenient):
    image: str = Field(..., pattern=BASE64_IMAGE, description="base64 image (raw or data URL)")


class PNGInfoResponse(BaseModel):
    info: str
    items: dict[str, Any]
    parameters: dict[str, Any]
    reason: str | None = Field(None, description="why there is no info: the base64 data is not a readable image")


class ProgressState(BaseModel):
    skipped: bool
    interrupted: bool
    job: str
    job_count: int
    job_timestamp: str
    job_no: int
    sampling_step: int
    sampling_steps: int


class ProgressResponse(BaseModel):
    progress: float
    eta_relative: float
    state: ProgressState
    current_image: str | None = None
    textinfo: str | None = None


class ModelSettings(BaseModel):
    width: int
    height: int
    cfg_scale: float
    sampler_name: str
    steps: int


class ExamplePrompt(BaseModel):
    lang: str = Field(..., description='language code, or "zh+en" for a mixed prompt')
    prompt: str


class SDModelItem(BaseModel):
    title: str
    model_name: str
    hash: str | None
    sha256: str | None
    filename: str
    config: str | None = None
    defaults: ModelSettings | None = Field(
        None, description="what txt2img / img2img use for each of these fields a request leaves out"
    )
    examples: list[ExamplePrompt] = Field(default_factory=list, description="prompts this model draws well")


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, str]


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: list[str] | None = None
    default_rho: float = -1
    need_inner_model: bool = False
