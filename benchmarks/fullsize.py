"""Full-size configurations the benchmarks build with random weights (published sizes)."""

# XLM-R large (xlm-roberta-large/config.json), dropout 0 as the published text encoders and
# our distillation student use.
XLMR_LARGE = {
    "attention_probs_dropout_prob": 0.0,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "hidden_size": 1024,
    "initializer_range": 0.02,
    "intermediate_size": 4096,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 514,
    "num_attention_heads": 16,
    "num_hidden_layers": 24,
    "position_embedding_type": "absolute",
    "type_vocab_size": 1,
    "vocab_size": 250002,
}

# XLM-R large + AltDiffusion's m9 text head (BAAI/AltDiffusion-m9 text_encoder/config.json).
XLMR_LARGE_M9 = {
    **XLMR_LARGE,
    "project_dim": 768,
    "pooler_fn": "cls",
    "learn_encoder": False,
    "use_attention_mask": True,
}

# CompVis/stable-diffusion-v1-4 unet/config.json: what AltDiffusion and -m9 are built on.
SD14_UNET = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

# CompVis/stable-diffusion-v1-4 vae/config.json (kl-f8; scaling_factor 0.18215).
SD14_VAE = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "scaling_factor": 0.18215,
}

# XLM-R large + AltDiffusion-m18's text head (BAAI/AltDiffusion-m18 text_encoder/config.json:
# project_dim 1024, the penultimate layer through pre_LN and transformation_pre).
XLMR_LARGE_M18 = {**XLMR_LARGE_M9, "project_dim": 1024, "has_pre_transformation": True}

# stabilityai/stable-diffusion-2-1-base unet/config.json: what AltDiffusion-m18 is built on.
SD21_BASE_UNET = {
    **SD14_UNET,
    "attention_head_dim": [5, 10, 20, 20],
    "cross_attention_dim": 1024,
    "use_linear_projection": True,
}
