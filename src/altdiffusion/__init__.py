"""altdiffusion: multilingual text-to-image with AltCLIP and AltDiffusion."""

__version__ = "0.1.0"

from altdiffusion.errors import (
    AltDiffusionError,
    CheckpointError,
    InvalidInputError,
    ModelNotFoundError,
)


def load_clip(name_or_path, device=None, dtype=None):
    """An AltCLIP (hub id, local folder or "mini"): see :class:`altdiffusion.clip.CLIP`."""
    from altdiffusion.clip import load_clip as _load_clip

    return _load_clip(name_or_path, device=device, dtype=dtype)


def load_pipeline(name_or_path, device=None, dtype=None, *, safety_checker: bool = True, config=None):
    """An AltDiffusion pipeline (hub id, local folder, single file or "mini"): see
    :class:`altdiffusion.pipelines.alt_diffusion.AltDiffusionPipeline`."""
    from altdiffusion.pipelines.alt_diffusion import load_pipeline as _load_pipeline

    return _load_pipeline(name_or_path, device=device, dtype=dtype, safety_checker=safety_checker, config=config)


__all__ = [
    "AltDiffusionError",
    "CheckpointError",
    "InvalidInputError",
    "ModelNotFoundError",
    "__version__",
    "load_clip",
    "load_pipeline",
]
