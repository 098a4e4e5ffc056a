"""Independent computations with transformers' AltCLIPModel (no altdiffusion code on the model path)."""

import torch
import torch.nn.functional as F
from PIL import Image


@torch.no_grad()
def text_features(reference, texts):
    model, tokenizer, _ = reference
    batch = tokenizer(list(texts), padding=True, return_tensors="pt")
    return F.normalize(model.get_text_features(**batch).pooler_output, dim=-1)


@torch.no_grad()
def image_features(reference, paths):
    model, _, processor = reference
    images = [Image.open(p).convert("RGB") for p in paths]
    pixels = processor(images=images, return_tensors="pt").pixel_values
    return F.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
