"""Low-memory modes (A1111's ``--medvram`` / ``--lowvram``) and a VAE decode that survives fp16 NaNs.

    full       every component stays on the device (fastest)
    balanced   one of text encoder / UNet / VAE on the device at a time (accelerate hooks move the
               others to the CPU); VAE slicing (one image at a time) and tiling (images larger than
               the VAE's own sample size are decoded in blended tiles)
    low        as balanced, but the text encoder and UNet stream their weights layer by layer
               (accelerate's sequential offload) and attention runs in slices off CUDA

accelerate's ``cpu_offload_with_hook`` chain leaves the last module (the VAE) on the device
between calls; :class:`OneResident` moves every other member of the group off first, so at
most one of them holds device memory at any time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from accelerate.hooks import ModelHook, add_hook_to_module, remove_hook_from_module
from accelerate.utils import send_to_device

from altdiffusion.errors import InvalidInputError
from altdiffusion.pipelines.components import cast_module
from altdiffusion.pipelines.modes import check_modes

logger = logging.getLogger("altdiffusion")


@dataclass(frozen=True)
class MemoryMode:
    """How a pipeline holds its weights; ``execution_device`` is where it computes."""

    name: str = "full"
    execution_device: torch.device | None = None  # None: where the weights are (mode "full")

    @property
    def offloaded(self) -> bool:
        return self.name != "full"


class OneResident(ModelHook):
    """Before its module runs, move the rest of ``group`` to the CPU and the module to the device."""

    def __init__(self, execution_device: torch.device, group: list[torch.nn.Module]):
        super().__init__()
        self.execution_device = execution_device
        self.group = group

    def pre_forward(self, module, *args, **kwargs):
        for other in self.group:
            if other is not module and _device_of(other) != torch.device("cpu"):
                other.to("cpu")
        if _device_of(module) != self.execution_device:
            module.to(self.execution_device)
            if self.execution_device.type == "cuda":
                torch.cuda.empty_cache()
        return send_to_device(args, self.execution_device), send_to_device(kwargs, self.execution_device)


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def apply_memory_mode(pipe, mode: str) -> MemoryMode:
    """Put ``pipe``'s components under ``mode`` (see the module docstring); returns the new state."""
    check_modes(pipe.speed is not None, mode)
    if pipe.memory.offloaded:
        raise InvalidInputError(f"the pipeline is already in memory mode {pipe.memory.name!r}; load it again to change")
    if mode == "full":
        return pipe.memory
    device = pipe.device
    pipe.vae.enable_slicing()
    pipe.vae.enable_tiling()
    if mode == "balanced":
        _one_resident(device, [pipe.text_encoder, pipe.unet, pipe.vae, pipe.safety_checker])
    else:
        _sequential(device, [pipe.text_encoder, pipe.unet, pipe.safety_checker])
        _one_resident(device, [pipe.vae])
        if device.type != "cuda":  # CUDA's SDPA kernels already attend in tiles; slicing would only slow them
            pipe.unet.set_attention_slice("auto")
    return MemoryMode(mode, device)


def _one_resident(device: torch.device, modules: list) -> None:
    group = [m for m in modules if m is not None]
    for module in group:
        module.to("cpu")
        add_hook_to_module(module, OneResident(device, group))


def _sequential(device: torch.device, modules: list) -> None:
    from accelerate import cpu_offload

    for module in modules:
        if module is not None:
            cpu_offload(module.to("cpu"), execution_device=device)


def swap_offloaded(old: torch.nn.Module, new: torch.nn.Module) -> None:
    """Give ``new`` the place ``old`` had in an offload group (a VAE swapped in under a memory mode):
    ``old`` goes to the CPU without hooks, ``new`` waits there under the same rule. Nothing to do
    when ``old`` has no :class:`OneResident` hook (mode "full")."""
    hook = getattr(old, "_hf_hook", None)
    if not isinstance(hook, OneResident):
        return
    remove_hook_from_module(old)
    old.to("cpu")
    hook.group[hook.group.index(old)] = new  # every member's hook shares this list
    if hasattr(new, "enable_tiling"):
        new.enable_slicing()
        new.enable_tiling()
    new.to("cpu")
    add_hook_to_module(new, OneResident(hook.execution_device, hook.group))


def remove_offload(module: torch.nn.Module) -> None:
    """Take the hooks off ``module`` (tests and benchmarks compare against the resident model)."""
    remove_hook_from_module(module, recurse=True)


# ----------------------------------------------------------------------------- VAE decode


def decode_with_fallback(vae, latents: torch.Tensor) -> torch.Tensor:
    """``vae.decode(latents)``; a half-precision VAE that overflows to NaN/inf is cast to float32
    once (it stays so, as A1111's ``--no-half-vae`` fallback) and the latents decoded again."""
    decoded = vae.decode(latents.to(vae.dtype)).sample
    if vae.dtype not in (torch.float16, torch.bfloat16) or torch.isfinite(decoded).all():
        return decoded
    logger.warning("the %s VAE produced NaN/inf; it now runs in float32 (slower, exact)", vae.dtype)
    cast_module(vae, dtype=torch.float32)
    return vae.decode(latents.float()).sample
