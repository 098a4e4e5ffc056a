"""Building our modules from checkpoint folders, strictly.

Modules are created with empty (meta) parameters and then receive the file's tensors, so a
full-size XLM-R is not randomly initialised only to be overwritten.
"""

from __future__ import annotations

import json
from pathlib import Path

from accelerate import init_empty_weights

from altdiffusion.errors import CheckpointError
from altdiffusion.models.altclip import AltCLIP
from altdiffusion.models.text_encoder import AltTextEncoder, text_config_from_dict
from altdiffusion.models.weights import find_weight_file, load_strict, read_state_dict, rename_keys

M18_HINTS = {
    r"^(transformation_pre|pre_LN)\.": (
        "The m18 text encoder needs `has_pre_transformation: true` in text_encoder/config.json together with "
        "pre_LN.* and transformation_pre.* weights: with only one of the two, conditioning would silently "
        "change (older diffusers dropped these weights and produced blurry, off-prompt images). Fix the config "
        "or re-download the weights."
    ),
}


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; the model folder is incomplete")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def load_text_encoder(folder: Path) -> AltTextEncoder:
    """An AltDiffusion ``text_encoder/`` folder (RobertaSeriesModelWithTransformation layout)."""
    raw = read_json(folder / "config.json")
    state = read_state_dict(find_weight_file(folder, ["model", "pytorch_model"]))
    state = rename_keys(state, [(r"^roberta\.encoder\.layers\.", "roberta.encoder.layer.")])
    return text_encoder_from_state(raw, state, where=f"text encoder {folder}")


def text_encoder_from_state(raw: dict, state: dict, *, where: str, hints: dict | None = None) -> AltTextEncoder:
    """An AltDiffusion text encoder built from its config (a ``text_encoder/config.json`` dict) and tensors."""
    for field in ("hidden_size", "num_hidden_layers", "vocab_size"):
        if field not in raw:
            raise CheckpointError(f"{where}: config field {field!r} is missing")
    config = text_config_from_dict(raw)
    head = "m18" if getattr(config, "has_pre_transformation", False) else "m9"
    with init_empty_weights():
        model = AltTextEncoder(config, head=head)
    # An m2/m9 text encoder was cut from an AltCLIP and may still carry AltCLIP's pre_LN;
    # the conditioning path never reads it. transformation_pre is the m18 signature: never dropped.
    ignore = [r"^pre_LN\."] if head == "m9" and not any(k.startswith("transformation_pre.") for k in state) else []
    load_strict(model, state, where=where, ignore=ignore, hints={**M18_HINTS, **(hints or {})})
    return model.eval()


def load_altclip(folder: Path) -> AltCLIP:
    """An AltCLIP folder in the transformers layout (4.x keys as published, or 5.x keys)."""
    from transformers import AltCLIPConfig

    raw = read_json(folder / "config.json")
    if raw.get("model_type") != "altclip":
        raise CheckpointError(f"{folder / 'config.json'}: model_type is {raw.get('model_type')!r}, expected 'altclip'")
    try:
        config = AltCLIPConfig.from_dict(raw)
    except Exception as err:  # transformers validation errors vary by version
        raise CheckpointError(f"{folder / 'config.json'}: invalid AltCLIP config ({err})") from None
    with init_empty_weights():
        model = AltCLIP(config)
    state = read_state_dict(find_weight_file(folder, ["model", "pytorch_model"]))
    # transformers 4 wrote `encoder.layer.N` (text) / `encoder.layers.N` (vision); transformers 5
    # saves `layer.N` for both. Accept either.
    state = rename_keys(
        state,
        [
            (r"^text_model\.roberta\.encoder\.layers\.", "text_model.roberta.encoder.layer."),
            (r"^vision_model\.encoder\.layer\.", "vision_model.encoder.layers."),
        ],
    )
    load_strict(model, state, where=f"AltCLIP {folder}")
    return model.eval()
