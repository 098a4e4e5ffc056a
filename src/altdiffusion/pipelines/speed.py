"""Speed mode: the UNet and VAE decoder compiled with torch.compile, channels-last, fused QKV.

What each lever does (the recipe of diffusers' "accelerate inference" guide, applied to our modules):

    SDPA              diffusers' default attention processor already (AttnProcessor2_0)
    fused QKV         self-attention's to_q/to_k/to_v become one matmul (cross-attention: to_k/to_v)
    channels-last     NHWC convolutions, what cuDNN and inductor's conv kernels prefer
    torch.compile     UNet and VAE decoder; the text encoder runs once per image, so compiling
                      it costs far more than it saves and it is left eager
    frozen weights    on the CPU (``freeze``): inductor's freezing folds the weights into the
                      graphs as constants and prepacks them for oneDNN's convolutions and matmuls,
                      1.1-1.2x over compiling alone on a full-size UNet step in bf16 (benchmarks/README.md).
                      Weights changed afterwards (a LoRA merged or unloaded) are not seen by frozen
                      graphs, so the pipeline recompiles after such a change: use ``freeze=False``
                      where weights change per call (the server, which merges a prompt's LoRAs per job)
    int8              on the CPU (``int8``, opt-in): the UNet quantized to int8 instead of compiled in
                      the pipeline's dtype (pipelines/int8.py); frozen by nature, so not with ``freeze=False``

Shapes: graphs are compiled with ``dynamic=False``, one per *shape bucket*: (batch x 2 with
CFG, height/8, width/8, 77 x prompt chunks). The first call in a bucket compiles (seconds to
minutes); later calls in it are fast. At most ``max_shapes`` buckets are compiled per module
(``torch._dynamo.config.recompile_limit``); a call in a further bucket runs uncompiled (correct,
slower) instead of compiling without end. Compiled kernels are cached on disk (ours under
~/.cache, or ``TORCHINDUCTOR_CACHE_DIR`` where the user set it), so a new process that compiles the
same buckets reuses them: whole graphs where weights are not frozen (inductor's FX graph cache: the
server, and the GPU, unmeasured), only the compiled C++ kernels where they are (the CPU's speed
mode: its graphs hold oneDNN-packed weights, which that cache cannot store), about halving the
warm-up (benchmarks/compile_cache.py). The int8 UNet's calibrated ranges are kept in the same folder
(``int8-calibration/``, pipelines/int8_ranges.py), so a new process skips calibrating too.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch._inductor.config

from altdiffusion.errors import InvalidInputError
from altdiffusion.pipelines.modes import check_modes

if TYPE_CHECKING:
    from altdiffusion.pipelines.int8 import Int8UNet

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
logger = logging.getLogger(__name__)
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "altdiffusion" / "inductor"


@dataclass(frozen=True)
class SpeedMode:
    """What :func:`apply_speed_mode` did, and where compiled kernels are cached."""

    compile_mode: str
    max_shapes: int
    cache_dir: str
    fused_qkv: bool
    channels_last: bool
    frozen: bool  # weights are constants in the compiled graphs: changing them needs a recompile
    int8: Int8UNet | None = None  # the UNet's int8 graphs (pipelines/int8.py), or None: compiled as it is

    def compile(self, module: torch.nn.Module) -> None:
        """``module.compile`` in this mode: one graph per shape bucket, frozen weights if ``frozen``."""
        module.compile(mode=self.compile_mode, dynamic=False)
        if self.frozen:
            compiled = module._compiled_call_impl

            def call_frozen(*args, **kwargs):
                # Dynamo reads inductor's freezing flag while it traces (it makes the parameters graph
                # constants), not from torch.compile's options; so the flag is on around each call.
                with torch._inductor.config.patch(freezing=True):
                    return compiled(*args, **kwargs)

            module._compiled_call_impl = call_frozen


def apply_speed_mode(
    pipe,
    *,
    compile_mode: str = "default",
    max_shapes: int = 8,
    cache_dir: str | Path | None = None,
    fuse_qkv: bool = True,
    channels_last: bool = True,
    freeze: bool | None = None,
    int8: bool = False,
) -> SpeedMode:
    """Compile ``pipe``'s UNet and VAE decoder in place; see the module docstring. ``compile_mode``:
    inductor's "default" keeps the warm-up of a shape bucket to about a minute; "max-autotune" (diffusers'
    "fast diffusion" recipe) tunes kernels for minutes more per bucket for the last share of speed.
    ``freeze``: weights as constants of the graphs (None: on the CPU, where it pays). ``int8``: the UNet
    quantized to int8 (CPU with VNNI only; pipelines/int8.py), 1.4x over the bf16 speed mode per full-size image."""
    if compile_mode not in COMPILE_MODES:
        raise InvalidInputError(f"unknown compile mode {compile_mode!r}; use one of {', '.join(COMPILE_MODES)}")
    check_modes(True, pipe.memory.name)
    if pipe.speed is not None:
        return pipe.speed
    cache = configure_compile_cache(cache_dir, max_shapes)
    frozen = pipe.device.type == "cpu" if freeze is None else bool(freeze)
    if int8 and not frozen:
        raise InvalidInputError(
            "int8 fixes the UNet's weights when it quantizes them, so it cannot run with freeze=False "
            "(weights that change per call, as the server's per-job LoRAs); leave out int8"
        )
    int8_unet = None
    if int8:
        from altdiffusion.pipelines.int8 import quantize_unet

        int8_unet = quantize_unet(pipe, max_shapes, Path(cache) / "int8-calibration")
    speed = SpeedMode(compile_mode, max_shapes, cache, fuse_qkv, channels_last, frozen, int8_unet)
    if int8_unet is None:
        compile_unet(pipe.unet, speed)
    compile_vae(pipe.vae, speed)
    return speed


def compile_unet(unet, speed: SpeedMode) -> None:
    """The UNet's share of ``speed``: fused QKV, channels-last, the whole UNet compiled."""
    if speed.fused_qkv:
        unet.fuse_qkv_projections()
    if speed.channels_last:
        unet.to(memory_format=torch.channels_last)
    speed.compile(unet)


def compile_vae(vae, speed: SpeedMode) -> None:
    """The VAE's share of ``speed``: fused QKV, channels-last, its decoder compiled (once per VAE)."""
    if getattr(vae.decoder, "_compiled_call_impl", None) is not None:
        return
    if speed.fused_qkv:
        vae.fuse_qkv_projections()
    if speed.channels_last:
        vae.to(memory_format=torch.channels_last)
    speed.compile(vae.decoder)


def configure_compile_cache(cache_dir: str | Path | None, max_shapes: int) -> str:
    """Point inductor's on-disk caches at ``cache_dir`` (else TORCHINDUCTOR_CACHE_DIR when set, else
    ours under ~/.cache) and bound recompilation per module to ``max_shapes``."""
    import torch._dynamo.config
    import torch._inductor.config

    if max_shapes < 1:
        raise InvalidInputError(f"max_shapes must be >= 1, got {max_shapes}")
    chosen = str(cache_dir or users_inductor_cache_dir() or DEFAULT_CACHE_DIR)
    Path(chosen).mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = chosen  # read by inductor when it first compiles
    torch._inductor.config.fx_graph_cache = True
    torch._dynamo.config.recompile_limit = max_shapes
    # diffusers' recipe for SD-sized UNets: 1x1 convolutions as matmuls, finer autotuning.
    torch._inductor.config.conv_1x1_as_mm = True
    torch._inductor.config.coordinate_descent_tuning = True
    return chosen


def users_inductor_cache_dir() -> str | None:
    """TORCHINDUCTOR_CACHE_DIR where the user set it. Importing inductor (diffusers does) fills the
    variable with torch's own default under /tmp, so that value is torch's choice, not the user's."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not chosen or os.path.abspath(chosen) == os.path.abspath(default_cache_dir()):
        return None
    return chosen


@torch.no_grad()
def refresh_fused_projections(module: torch.nn.Module) -> None:
    """Copy to_q/to_k/to_v into the fused to_qkv/to_kv in place, after their weights changed (a
    LoRA merged or restored): the same Parameter objects, so compiled graphs stay valid."""
    from diffusers.models.attention_processor import Attention

    for attn in module.modules():
        if not (isinstance(attn, Attention) and attn.fused_projections):
            continue
        parts = ("to_k", "to_v") if attn.is_cross_attention else ("to_q", "to_k", "to_v")
        fused = attn.to_kv if attn.is_cross_attention else attn.to_qkv
        fused.weight.copy_(torch.cat([getattr(attn, p).weight for p in parts]))
        if fused.bias is not None:
            fused.bias.copy_(torch.cat([getattr(attn, p).bias for p in parts]))


def recompile_frozen() -> None:
    """Drop every compiled graph so that frozen ones are built again from the weights as they are
    now; the next call of each shape bucket compiles again. Dynamo's reset is process-wide, so other
    compiled models in the process recompile too (correct, slower once)."""
    torch._dynamo.reset()
    logger.warning("speed mode: the weights changed, so the frozen graphs compile again on the next call")


def timed_warm_up(pipe, **call_kwargs) -> float:
    """Seconds of a 2-step call with ``call_kwargs``' shapes: it compiles that shape bucket."""
    start = time.perf_counter()
    pipe(**{**call_kwargs, "num_inference_steps": 2, "progress": False, "output_type": "np"})
    if pipe.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start
