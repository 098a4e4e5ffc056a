"""``/sdapi/v1/progress``: how far the running job is, and a live preview of its first image.

The preview decodes the latest latents the pipeline reported; it is cached per latents
version, so many clients polling at once cost one VAE decode per step, not one each.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import torch

from altdiffusion.pipelines.images import to_pil
from altdiffusion.serve.images import encode_png
from altdiffusion.serve.runner import JobState

logger = logging.getLogger("altdiffusion.serve")

STATE_FIELDS = (
    "skipped",
    "interrupted",
    "job",
    "job_count",
    "job_timestamp",
    "job_no",
    "sampling_step",
    "sampling_steps",
)


class ProgressReporter:
    """Answers progress requests from a :class:`JobState`."""

    def __init__(self, state: JobState):
        self.state = state
        self._preview_lock = threading.Lock()
        self._preview: tuple[int, str | None] = (-1, None)  # (latents version, base64 PNG)

    def report(self, skip_current_image: bool) -> dict[str, Any]:
        snap = self.state.snapshot()
        state = {k: snap[k] for k in STATE_FIELDS}
        if not snap["job"]:
            return {"progress": 0.0, "eta_relative": 0.0, "state": state, "current_image": None, "textinfo": None}
        per_iteration = snap["sampling_step"] / snap["sampling_steps"] if snap["sampling_steps"] else 0.0
        progress = min((snap["job_no"] + per_iteration) / max(snap["job_count"], 1), 1.0)
        elapsed = time.monotonic() - snap["started"]
        eta = elapsed / progress - elapsed if progress > 0 else 0.0
        image = None if skip_current_image else self.preview(snap)
        text = (
            f"{snap['job']}: iteration {snap['job_no'] + 1}/{snap['job_count']}, "
            f"step {snap['sampling_step']}/{snap['sampling_steps']}"
        )
        return {"progress": progress, "eta_relative": eta, "state": state, "current_image": image, "textinfo": text}

    def preview(self, snap: dict[str, Any]) -> str | None:
        """Base64 PNG of the first image's latest latents, or None before the first step."""
        latents, pipe, version = snap["latents"], snap["pipe"], snap["latents_version"]
        if latents is None or pipe is None:
            return None
        with self._preview_lock:
            if self._preview[0] != version:
                self._preview = (version, _decode_preview(pipe, latents))
            return self._preview[1]


def _decode_preview(pipe, latents) -> str | None:
    try:
        with torch.no_grad():
            pixels = pipe.decode_latents(latents[:1])
        return encode_png(to_pil(pixels)[0])
    except Exception as exc:  # a preview is best effort; the job goes on
        logger.debug("preview failed: %s", exc)
        return None
