"""altdiffusion: multilingual text-to-image with AltCLIP and AltDiffusion."""

__version__ = "0.1.0"

from altdiffusion.errors import (  # noqa: E402
    AltDiffusionError,
    CheckpointError,
    InvalidInputError,
    ModelNotFoundError,
)

__all__ = [
    "__version__",
    "AltDiffusionError",
    "CheckpointError",
    "InvalidInputError",
    "ModelNotFoundError",
]
