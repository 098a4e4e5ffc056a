"""Training LoRA adapters with peft, and writing them in both formats users load.

``add_lora`` injects peft LoRA layers into the UNet (base weights frozen, untouched) and returns
their :class:`LoraAdapter` (rank, alpha), which the caller keeps and hands on (both files record
alpha); ``lora_layers`` reads the trained A/B matrices back out; ``save_lora`` writes
``pytorch_lora_weights.safetensors`` (diffusers/peft keys) and ``<name>.safetensors`` (kohya
keys, for AUTOMATIC1111 and ComfyUI). Key mapping lives in :mod:`altdiffusion.pipelines.lora`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from altdiffusion.errors import InvalidInputError
from altdiffusion.pipelines.lora import LoraLayer, layers_to_kohya, layers_to_peft

TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
ADAPTER = "default"
PEFT_FILE = "pytorch_lora_weights.safetensors"


@dataclass(frozen=True)
class LoraAdapter:
    """The shape of the adapter ``add_lora`` injected: every layer's rank and alpha."""

    rank: int
    alpha: float


def add_lora(unet: torch.nn.Module, rank: int = 4, alpha: float | None = None, targets=TARGET_MODULES) -> LoraAdapter:
    """Freeze ``unet`` and add trainable LoRA layers (rank ``rank``, alpha ``alpha`` (default rank))."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise InvalidInputError("LoRA training needs peft: pip install peft (or train with --full)") from None
    if rank <= 0:
        raise InvalidInputError(f"--lora-rank must be positive, got {rank}")
    alpha = float(rank if alpha is None else alpha)
    if alpha <= 0:
        raise InvalidInputError(f"--lora-alpha must be positive, got {alpha}")
    unet.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), init_lora_weights="gaussian")
    inject_adapter_in_model(config, unet, adapter_name=ADAPTER)
    for name, p in unet.named_parameters():
        p.requires_grad_(".lora_A." in name or ".lora_B." in name)
    return LoraAdapter(rank, alpha)


def lora_layers(unet: torch.nn.Module, adapter: LoraAdapter, root: str = "unet") -> list[LoraLayer]:
    """The trained LoRA layers of a peft-injected module (detached copies, float32)."""
    found: dict[str, dict[str, torch.Tensor]] = {}
    pattern = re.compile(rf"^(?P<module>.+)\.lora_(?P<part>[AB])\.{ADAPTER}\.weight$")
    for name, p in unet.named_parameters():
        match = pattern.match(name)
        if match:
            found.setdefault(match["module"], {})[match["part"]] = p.detach().to("cpu", torch.float32).clone()
    return [LoraLayer(root, module, parts["A"], parts["B"], adapter.alpha) for module, parts in sorted(found.items())]


def base_state_dict(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The UNet's own weights under their original names (peft's ``.base_layer`` removed)."""
    out = {}
    for name, tensor in unet.state_dict().items():
        if ".lora_A." in name or ".lora_B." in name:
            continue
        out[name.replace(".base_layer.", ".")] = tensor
    return out


def save_lora(
    unet: torch.nn.Module,
    adapter: LoraAdapter,
    folder: Path,
    name: str,
    extra_metadata: dict[str, str] | None = None,
) -> tuple[Path, Path]:
    """Write both files; returns (diffusers file, kohya file)."""
    from altdiffusion.models.weights import save_safetensors

    layers = lora_layers(unet, adapter)
    extra = extra_metadata or {}
    state, meta = layers_to_peft(layers, {k: v for k, v in extra.items() if not k.startswith("ss_")})
    peft_path = Path(folder) / PEFT_FILE
    save_safetensors(state, peft_path, meta)
    tensors, meta = layers_to_kohya(layers, extra)
    kohya_path = Path(folder) / f"{name}.safetensors"
    save_safetensors(tensors, kohya_path, meta)
    return peft_path, kohya_path
