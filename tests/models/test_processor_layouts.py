"""An AltCLIP folder whose processor transformers 5 saved (``processor_config.json``, the image settings
under ``image_processor``) loads like the 2022 layout (``preprocessor_config.json``)."""

import shutil

import torch
from PIL import Image
from transformers import AltCLIPProcessor

import altdiffusion
from altdiffusion.models.tiny import write_tiny_altclip


def test_a_transformers5_processor_folder_loads_and_embeds_the_same(tmp_path):
    old = write_tiny_altclip(tmp_path / "2022", "m9")
    new = tmp_path / "transformers5"
    shutil.copytree(old, new)
    (new / "preprocessor_config.json").unlink()
    AltCLIPProcessor.from_pretrained(str(old)).save_pretrained(str(new))
    assert (new / "processor_config.json").is_file() and not (new / "preprocessor_config.json").exists()

    image = Image.effect_noise((48, 40), 50).convert("RGB")
    reference = altdiffusion.load_clip(old, device="cpu")
    resaved = altdiffusion.load_clip(new, device="cpu")
    assert torch.equal(reference.embed_image(image), resaved.embed_image(image))
    assert torch.equal(reference.embed_text("一只猫"), resaved.embed_text("一只猫"))
