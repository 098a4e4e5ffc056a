"""The server's limits, stated in its OpenAPI schema (``/openapi.json``, ``/docs``).

The request models are static; the limits come from the :class:`ServeConfig` the app serves,
so they are written into the generated schema once, where a client generator or a fuzzer reads them.
"""

from __future__ import annotations

from typing import Any

from altdiffusion.prompts.extra_networks import MAX_LORA_WEIGHT
from altdiffusion.serve.config import ServeConfig

GENERATION_REQUESTS = ("Txt2ImgRequest", "Img2ImgRequest")


def publish_limits(schema: dict[str, Any], config: ServeConfig) -> dict[str, Any]:
    """``schema`` with ``config``'s limits as JSON-schema bounds and descriptions (changed in place)."""
    models = schema.get("components", {}).get("schemas", {})
    for name in GENERATION_REQUESTS:
        fields = models.get(name, {}).get("properties", {})
        _bound(fields, "steps", maximum=config.max_steps)
        _bound(fields, "batch_size", maximum=config.max_batch, note="batch_size x n_iter")
        _bound(fields, "n_iter", maximum=config.max_batch, note="batch_size x n_iter")
        for side in ("width", "height"):
            _bound(fields, side, note=f"width x height <= {config.max_pixels} pixels")
        _bound(
            fields,
            "prompt",
            note=f"at most {config.max_lora_tags} <lora:name:weight> tags, |weight| <= {MAX_LORA_WEIGHT:g}",
        )
    img2img = models.get("Img2ImgRequest", {}).get("properties", {})
    _bound(img2img, "init_images", maxItems=config.max_images, note=_image_budget(config))
    _bound(img2img, "mask", note=_image_budget(config))
    _bound(models.get("PNGInfoRequest", {}).get("properties", {}), "image", note=_image_budget(config))
    schema["info"]["description"] += "\n\n" + limits_text(config)
    return schema


def _image_budget(config: ServeConfig) -> str:
    return (
        f"init_images + mask: at most {config.max_images} images and {config.max_input_pixels} pixels "
        "together, read from the image headers"
    )


def _bound(fields: dict[str, Any], name: str, note: str | None = None, **bounds: int) -> None:
    field = fields.get(name)
    if field is None:
        return
    field.update(bounds)
    if note:
        field["description"] = f"{field.get('description', '').rstrip('. ')}; {note}".lstrip("; ")


def limits_text(config: ServeConfig) -> str:
    """This server's limits, one line each (the schema's description)."""
    return "\n".join(
        [
            "Limits of this server:",
            f"- {config.max_steps} steps, {config.max_pixels} pixels (width x height), {config.max_batch} images "
            "(batch_size x n_iter) per request",
            f"- {config.max_images} input images and {config.max_input_pixels} input pixels per request; "
            f"bodies up to {config.max_body_bytes} bytes",
            f"- a job runs at most {config.max_job_seconds} s (503 JobTimeLimit after that); "
            f"{config.max_queue} jobs wait at most (429 after that)",
            f"- {config.max_connections} open connections; {config.header_timeout} s for a request's headers, "
            f"{config.body_timeout} s for its body, {config.keep_alive_timeout} s idle keep-alive",
        ]
    )
