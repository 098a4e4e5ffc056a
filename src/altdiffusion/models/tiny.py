"""Tiny random checkpoints in the exact layouts BAAI published.

No model hub is reachable in development or CI, so tests (and `altdiffusion dev tiny`) write
miniature versions of the six published checkpoints: the same file names, config fields
(legacy ones included: ``_diffusers_version: 0.8.0.dev0``, UNet ``sample_size: 32``,
``num_layers``/``direct_kd`` in AltCLIP's config), weight key names (transformers-4 AltCLIP
keys, diffusers-0.8 VAE attention names ``query/key/value/proj_attn``, XLM-R ``pooler``
leftovers) and pickled ``.bin`` weights — only the sizes are small.
See ../shared/reference/checkpoints.md for the facts these reproduce.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from altdiffusion.models.tiny_tokenizers import write_json, write_xlmr_tokenizer

VARIANTS = ("m2", "m9", "m18")

CLIP_IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]


def _text_config(vocab_size: int, project_dim: int) -> dict:
    """XLM-R large's config with tiny sizes (2 layers, so hidden_states[-2] is a real layer)."""
    return {
        "architectures": ["RobertaSeriesModelWithTransformation"],
        "attention_probs_dropout_prob": 0.0,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "hidden_size": 32,
        "initializer_range": 0.02,
        "intermediate_size": 37,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 514,
        "model_type": "xlm-roberta",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "position_embedding_type": "absolute",
        "type_vocab_size": 1,
        "use_cache": True,
        "vocab_size": vocab_size,
        "project_dim": project_dim,
        "pooler_fn": "cls",
        "learn_encoder": False,
        "use_attention_mask": True,
        "torch_dtype": "float32",
        "transformers_version": "4.21.0.dev0",
    }


def _random_text_tower(config: dict, head: str, seed: int) -> dict[str, torch.Tensor]:
    from altdiffusion.models.text_encoder import AltTextEncoder, text_config_from_dict

    torch.manual_seed(seed)
    model = AltTextEncoder(text_config_from_dict(config), head=head)
    _randomise(model)
    state = dict(model.state_dict())
    # Published files carry XLM-R's unused pooler (and old transformers' position_ids buffer).
    h = config["hidden_size"]
    state["roberta.pooler.dense.weight"] = torch.randn(h, h) * 0.02
    state["roberta.pooler.dense.bias"] = torch.zeros(h)
    state["roberta.embeddings.position_ids"] = torch.arange(config["max_position_embeddings"])[None]
    return state


def _randomise(module: torch.nn.Module) -> None:
    """Non-trivial LayerNorm/bias values so a skipped LayerNorm or bias changes outputs."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
            elif "LayerNorm" in name or "layer_norm" in name or "pre_LN" in name or name.endswith("norm.weight"):
                p.normal_(1.0, 0.2)


# ---------------------------------------------------------------------------------------------
# AltCLIP (transformers layout, as written by transformers 4.2x)


def _altclip_config(vocab_size: int, variant: str) -> dict:
    """AltCLIP's config as transformers 4.2x wrote it (legacy ``num_layers``, ``direct_kd``)."""
    projection_dim = 24 if variant == "m18" else 16
    text = _text_config(vocab_size, project_dim=32)
    text.pop("architectures")
    text.update(model_type="altclip_text_model")
    vision = {
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "image_size": 32,
        "patch_size": 8,
        "projection_dim": projection_dim,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-05,
        "model_type": "altclip_vision_model",
        "num_channels": 3,
    }
    return {
        "_commit_hash": None,
        "architectures": ["AltCLIPModel"],
        "direct_kd": False,
        "initializer_factor": 1.0,
        "logit_scale_init_value": 2.6592,
        "model_type": "altclip",
        "num_layers": 3,
        "projection_dim": projection_dim,
        "text_config": text,
        "vision_config": vision,
        "torch_dtype": "float32",
        "transformers_version": None,
    }


def write_tiny_altclip(
    folder: str | Path, variant: str = "m9", *, seed: int = 0, tokenizer_json: bytes | None = None
) -> Path:
    """BAAI/AltCLIP(-m9/-m18) in miniature: config.json, pytorch_model.bin, processor, tokenizer.

    ``tokenizer_json``: the tokenizer to ship (the real XLM-R one) instead of a small trained one."""
    from transformers import AltCLIPConfig

    from altdiffusion.models.altclip import AltCLIP

    folder = Path(folder)
    vocab = write_xlmr_tokenizer(folder, max_length=512, with_tokenizer_json=True, tokenizer_json=tokenizer_json)
    config = _altclip_config(vocab, variant)
    write_json(folder / "config.json", config)
    torch.manual_seed(seed)
    model = AltCLIP(AltCLIPConfig.from_dict(config))
    _randomise(model)
    state = dict(model.state_dict())
    state["text_model.roberta.pooler.dense.weight"] = torch.randn(32, 32) * 0.02
    state["text_model.roberta.pooler.dense.bias"] = torch.zeros(32)
    torch.save(state, folder / "pytorch_model.bin")
    write_json(
        folder / "preprocessor_config.json",
        {
            "crop_size": 32,
            "do_center_crop": True,
            "do_normalize": True,
            "do_resize": True,
            "feature_extractor_type": "CLIPFeatureExtractor",
            "image_mean": CLIP_IMAGE_MEAN,
            "image_std": CLIP_IMAGE_STD,
            "resample": 3,
            "size": 32,
            "processor_class": "AltCLIPProcessor",
        },
    )
    tok_config = json.loads((folder / "tokenizer_config.json").read_text())
    tok_config["processor_class"] = "AltCLIPProcessor"
    write_json(folder / "tokenizer_config.json", tok_config)
    return folder


# ---------------------------------------------------------------------------------------------
# AltDiffusion (diffusers 0.8 folder layout)


def _unet_config(variant: str, cross_attention_dim: int) -> dict:
    config = {
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": "0.8.0.dev0",
        "act_fn": "silu",
        "attention_head_dim": 8,
        "block_out_channels": [32, 64],
        "center_input_sample": False,
        "cross_attention_dim": cross_attention_dim,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 1,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "out_channels": 4,
        "sample_size": 32,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    }
    if variant == "m18":  # SD-2-base style: 64-channel heads given per block, linear projections
        config.update(attention_head_dim=[2, 4], use_linear_projection=True, _diffusers_version="0.10.0.dev0")
    return config


def _vae_config() -> dict:
    return {
        "_class_name": "AutoencoderKL",
        "_diffusers_version": "0.8.0.dev0",
        "act_fn": "silu",
        "block_out_channels": [32, 64],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
        "in_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 1,
        "norm_num_groups": 32,
        "out_channels": 3,
        "sample_size": 64,
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
    }


SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.8.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}

MODEL_INDEX = {
    "_class_name": "AltDiffusionPipeline",
    "_diffusers_version": "0.8.0.dev0",
    "feature_extractor": ["transformers", "CLIPFeatureExtractor"],
    "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["alt_diffusion", "RobertaSeriesModelWithTransformation"],
    "tokenizer": ["transformers", "XLMRobertaTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def _legacy_vae_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers 0.8 named the VAE mid-block attention query/key/value/proj_attn."""
    renames = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}
    out = {}
    for key, value in state.items():
        if ".attentions." in key:
            for new, old in renames.items():
                key = key.replace(new, old)
        out[key] = value
    return out


def write_tiny_altdiffusion(
    folder: str | Path,
    variant: str = "m9",
    *,
    seed: int = 0,
    safety_checker: bool = True,
    tokenizer_json: bytes | None = None,
    text_weights: str = "bin",
) -> Path:
    """BAAI/AltDiffusion(-m9/-m18) in miniature, every file where the published folder has it.

    ``tokenizer_json``: the tokenizer to ship (the real XLM-R one) instead of a small trained one."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index = dict(MODEL_INDEX)
    if not safety_checker:
        index["safety_checker"] = [None, None]
        index["feature_extractor"] = [None, None]
    write_json(folder / "model_index.json", index)

    tokenizer = folder / "tokenizer"
    vocab = write_xlmr_tokenizer(tokenizer, max_length=77, with_tokenizer_json=False, tokenizer_json=tokenizer_json)

    project_dim = 48 if variant == "m18" else 32
    text = _text_config(vocab, project_dim)
    if variant == "m18":
        text.update(_name_or_path="xlm-roberta-large", has_pre_transformation=True)
    write_json(folder / "text_encoder" / "config.json", text)
    state = _random_text_tower(text, "m18" if variant == "m18" else "m9", seed)
    if text_weights == "safetensors":
        from safetensors.torch import save_file

        state.pop("roberta.embeddings.position_ids")
        save_file(state, str(folder / "text_encoder" / "model.safetensors"), metadata={"format": "pt"})
    else:
        torch.save(state, folder / "text_encoder" / "pytorch_model.bin")

    torch.manual_seed(seed + 1)
    unet_config = _unet_config(variant, project_dim)
    unet = UNet2DConditionModel(**{k: v for k, v in unet_config.items() if not k.startswith("_")})
    _randomise(unet)
    write_json(folder / "unet" / "config.json", unet_config)
    torch.save(unet.state_dict(), folder / "unet" / "diffusion_pytorch_model.bin")

    torch.manual_seed(seed + 2)
    vae_config = _vae_config()
    vae = AutoencoderKL(**{k: v for k, v in vae_config.items() if not k.startswith("_")})
    write_json(folder / "vae" / "config.json", vae_config)
    torch.save(_legacy_vae_keys(vae.state_dict()), folder / "vae" / "diffusion_pytorch_model.bin")

    write_json(folder / "scheduler" / "scheduler_config.json", SCHEDULER_CONFIG)

    if safety_checker:
        _write_safety_checker(folder, seed)
    return folder


def _write_safety_checker(folder: Path, seed: int) -> None:
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig

    torch.manual_seed(seed + 3)
    config = CLIPConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 37,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
            "vocab_size": 99,
            "bos_token_id": 0,
            "eos_token_id": 2,
            "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 37,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    checker = StableDiffusionSafetyChecker(config)
    # Random concept thresholds would flag random images; real ones are tuned. Keep it permissive.
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(1.0)
        checker.special_care_embeds_weights.fill_(1.0)
    sc = folder / "safety_checker"
    sc.mkdir(parents=True, exist_ok=True)
    config_dict = config.to_dict()
    config_dict["architectures"] = ["StableDiffusionSafetyChecker"]
    write_json(sc / "config.json", config_dict)
    torch.save(checker.state_dict(), sc / "pytorch_model.bin")
    write_json(
        folder / "feature_extractor" / "preprocessor_config.json",
        {
            "crop_size": 32,
            "do_center_crop": True,
            "do_convert_rgb": True,
            "do_normalize": True,
            "do_resize": True,
            "feature_extractor_type": "CLIPFeatureExtractor",
            "image_mean": CLIP_IMAGE_MEAN,
            "image_std": CLIP_IMAGE_STD,
            "resample": 3,
            "size": 32,
        },
    )
