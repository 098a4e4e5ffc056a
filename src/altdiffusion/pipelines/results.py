"""What a generation returns, and the error a stopped one raises with the images it had."""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from altdiffusion.errors import AltDiffusionError


@dataclass
class GenerationResult:
    images: list[Image.Image]
    infotexts: list[str]
    seeds: list[int]
    nsfw: list[bool] = field(default_factory=list)
    steps_done: int = 0  # denoising steps the images went through
    partial: bool = False  # stopped early: decoded from the latents of the last finished step


class GenerationInterrupted(AltDiffusionError):
    """Raised when ``should_stop`` returns True; ``result`` holds the images decoded from the
    last finished step (no images when no step had finished)."""

    def __init__(self, message: str, result: GenerationResult):
        super().__init__(message)
        self.result = result
