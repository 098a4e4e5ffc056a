"""``/sdapi/v1/progress``: how far the running job is, and a live preview of its first image.

The preview maps the latest latents the pipeline reported to RGB with the model's cheap linear
map (A1111's "Approx cheap", pipelines/preview.py), never a VAE decode: a poll costs
microseconds and never competes with the job for the device. It is cached per latents
version, so many clients polling at once cost one map per step, not one each.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from altdiffusion.serve.images import encode_png
from altdiffusion.serve.runner import JobState

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
        latents, to_rgb, version = snap["latents"], snap["preview"], snap["latents_version"]
        if latents is None or to_rgb is None:
            return None
        with self._preview_lock:
            if self._preview[0] != version:
                self._preview = (version, encode_png(to_rgb(latents[:1])[0]))
            return self._preview[1]
