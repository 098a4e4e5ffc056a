"""The LoRA files prompts may name with ``<lora:name:weight>`` (see prompts/extra_networks.py).

A request names a LoRA only by its file stem in ``--lora-dir``; it can never give a path.
The tag is removed from the text that conditions the UNet (as in A1111) and kept in the
infotext, which also gets ``Lora hashes``.
"""

from __future__ import annotations

from pathlib import Path

from altdiffusion.errors import InvalidInputError


class LoraRegistry:
    """The ``*.safetensors`` files of one folder, by file stem."""

    def __init__(self, folder: str | Path | None):
        self.folder = Path(folder) if folder else None
        if self.folder is not None and not self.folder.is_dir():
            raise InvalidInputError(f"--lora-dir {self.folder} is not a folder")
        self.files: dict[str, Path] = {}
        self.refresh()

    def refresh(self) -> None:
        if self.folder is None:
            self.files = {}
            return
        self.files = {p.stem: p for p in sorted(self.folder.glob("*.safetensors")) if p.is_file()}

    def path(self, name: str) -> Path:
        if name not in self.files:
            known = ", ".join(self.files) or "none (start the server with --lora-dir)"
            raise InvalidInputError(f"LoRA {name!r} not found; available: {known}")
        return self.files[name]

    def items(self) -> list[dict]:
        """A1111's ``/sdapi/v1/loras`` shape; ``path`` is the file name only, never a server path."""
        return [{"name": name, "alias": name, "path": path.name, "metadata": {}} for name, path in self.files.items()]
