"""diffusers names -> the original LDM names A1111 single files use (the export direction).

A single ``.safetensors`` in A1111's layout holds three prefixed modules:

    model.diffusion_model.*   the UNet, in LDM's openaimodel naming (input_blocks / middle_block / output_blocks)
    first_stage_model.*       the VAE (encoder.down.i.block.j, mid.attn_1.q as 1x1 convolutions, ...)
    cond_stage_model.*        AltDiffusion: A1111's BertSeriesModelWithTransformation (roberta.*, transformation.*,
                              m18 also pre_LN.*, transformation_pre.*); SD-1.x: transformer.text_model.* (CLIP)

diffusers ships only LDM -> diffusers (``diffusers.loaders.single_file_utils``, which loading uses);
this is the inverse, written from the same block arithmetic: with L = layers_per_block, down block b's
j-th layer is ``input_blocks[1 + b(L+1) + j]`` and its downsampler ``input_blocks[(b+1)(L+1)]``; up block
b's j-th layer is ``output_blocks[b(L+1) + j]`` and its upsampler sits after the block's last layer.
Every mapping is a rename except the VAE attention weights (linear in diffusers, 1x1 conv in LDM).
"""

from __future__ import annotations

import torch

from altdiffusion.errors import CheckpointError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def unet_ldm_name(key: str, config) -> str:
    """The LDM name of a diffusers ``UNet2DConditionModel`` parameter (``config``: the UNet's config)."""
    module, _, param = key.rpartition(".")
    if module in _UNET_FIXED:
        return f"{_UNET_FIXED[module]}.{param}"
    parts = key.split(".")
    per_block = config["layers_per_block"] + 1
    if parts[0] == "mid_block":
        index = 1 if parts[1] == "attentions" else 2 * int(parts[2])
        return f"middle_block.{index}.{_inner(parts[1], parts[3:])}"
    if parts[0] not in ("down_blocks", "up_blocks"):
        raise CheckpointError(f"cannot export the UNet parameter {key!r}: it has no name in the LDM layout")
    block, kind = int(parts[1]), parts[2]
    if parts[0] == "down_blocks":
        if kind == "downsamplers":
            return f"input_blocks.{(block + 1) * per_block}.0.op.{param}"
        index = 1 + block * per_block + int(parts[3])
        return f"input_blocks.{index}.{0 if kind == 'resnets' else 1}.{_inner(kind, parts[4:])}"
    if kind == "upsamplers":
        has_attention = config["up_block_types"][block].startswith("CrossAttn")
        index = block * per_block + per_block - 1
        return f"output_blocks.{index}.{2 if has_attention else 1}.conv.{param}"
    index = block * per_block + int(parts[3])
    return f"output_blocks.{index}.{0 if kind == 'resnets' else 1}.{_inner(kind, parts[4:])}"


def _inner(kind: str, rest: list[str]) -> str:
    """Names inside a block: resnets rename their layers; transformer blocks keep diffusers' names."""
    if kind == "resnets":
        rest = [_UNET_RESNET.get(rest[0], rest[0]), *rest[1:]]
    return ".".join(rest)


def vae_ldm_name(key: str, config) -> str:
    """The LDM name of a diffusers ``AutoencoderKL`` parameter (``config``: the VAE's config)."""
    parts = key.split(".")
    side = parts[0]
    if len(parts) == 3 and parts[1] == "conv_norm_out":
        return f"{side}.norm_out.{parts[2]}"
    if len(parts) <= 3:  # conv_in, conv_out, quant_conv, post_quant_conv
        return key
    n_blocks = len(config["up_block_types"])
    rest = ".".join(parts[4:]).replace("conv_shortcut", "nin_shortcut")
    if parts[1] == "mid_block":
        index = int(parts[3])
        if parts[2] == "resnets":
            return f"{side}.mid.block_{index + 1}.{'.'.join(parts[4:]).replace('conv_shortcut', 'nin_shortcut')}"
        inner = ".".join(parts[4:])
        for new, old in _VAE_ATTENTION.items():
            if inner.startswith(new + "."):
                return f"{side}.mid.attn_1.{old}{inner[len(new) :]}"
    elif parts[1] in ("down_blocks", "up_blocks"):
        block = int(parts[2]) if parts[1] == "down_blocks" else n_blocks - 1 - int(parts[2])
        where = "down" if parts[1] == "down_blocks" else "up"
        if parts[3] == "resnets":
            return f"{side}.{where}.{block}.block.{rest}"
        if parts[3] in ("downsamplers", "upsamplers"):
            return f"{side}.{where}.{block}.{where}sample.{'.'.join(parts[5:])}"
    raise CheckpointError(f"cannot export the VAE parameter {key!r}: it has no name in the LDM layout")


def _vae_ldm_tensor(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """LDM's VAE attention is made of 1x1 convolutions: linear weights gain two unit dimensions."""
    is_attention_weight = ".mid.attn_1." in name and name.endswith("weight") and not name.endswith("norm.weight")
    return tensor[:, :, None, None] if is_attention_weight and tensor.ndim == 2 else tensor


def text_ldm_prefix(text_encoder) -> str:
    """A1111 names the XLM-R module's parameters directly under ``cond_stage_model.``; CLIP sits in ``.transformer``."""
    return CLIP_PREFIX if text_encoder.head == "sd" else TEXT_PREFIX


def text_state(text_encoder) -> dict[str, torch.Tensor]:
    """The text encoder's tensors under the names A1111 gives them below the prefix (CLIP's under
    ``text_model.``, which transformers 5's CLIPTextModel no longer has in its own names)."""
    if text_encoder.head != "sd":
        return text_encoder.state_dict()
    return {
        k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in text_encoder.model.state_dict().items()
    }


def ldm_state_dict(unet, vae, text_encoder) -> dict[str, torch.Tensor]:
    """One flat state dict in A1111's layout; the tensors are the modules' own (no copy) except
    the VAE attention weights, which are views with LDM's convolution shape."""
    state = {UNET_PREFIX + unet_ldm_name(k, unet.config): v for k, v in unet.state_dict().items()}
    for key, value in vae.state_dict().items():
        name = vae_ldm_name(key, vae.config)
        state[VAE_PREFIX + name] = _vae_ldm_tensor(name, value)
    prefix = text_ldm_prefix(text_encoder)
    state.update({prefix + k: v for k, v in text_state(text_encoder).items()})
    return state
