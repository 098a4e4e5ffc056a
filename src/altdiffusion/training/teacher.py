"""The frozen teacher of AltCLIP's teacher learning, and the AltCLIP folder a student becomes.

Teacher target (AltCLIP paper, stage 1): the CLIP text tower's pooled EOS output after the
final LayerNorm, *before* ``text_projection`` — ``CLIPTextModel.pooler_output``. An AltCLIP can
be the teacher too (to add languages to it): its target is the retrieval embedding before
``text_projection``. Either way the student inherits the teacher's ``text_projection``, image
tower and ``visual_projection``, which is what makes the result a complete AltCLIP.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from altdiffusion.errors import CheckpointError
from altdiffusion.models.loading import read_json
from altdiffusion.models.text_encoder import AltTextEncoder
from altdiffusion.models.weights import save_safetensors


class Teacher:
    def __init__(self, folder: str | Path, device: torch.device | str = "cpu"):
        from transformers import AutoTokenizer, CLIPModel

        from altdiffusion.hub import resolve_model

        self.folder = resolve_model(folder, kind="clip")
        config = read_json(self.folder / "config.json")
        self.kind = config.get("model_type")
        if self.kind == "clip":
            try:
                self.model = CLIPModel.from_pretrained(str(self.folder))
                self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
            except Exception as err:
                raise CheckpointError(f"teacher {self.folder}: cannot load the CLIP model ({err})") from None
            self.width = self.model.config.text_config.hidden_size
            self.max_length = min(77, self.model.config.text_config.max_position_embeddings)
            self.vision_config = self.model.config.vision_config.to_dict()
            self.projection_dim = self.model.config.projection_dim
        elif self.kind == "altclip":
            from altdiffusion.models.loading import load_altclip
            from altdiffusion.models.tokenizer import load_tokenizer

            self.model = load_altclip(self.folder)
            self.tokenizer = load_tokenizer(self.folder)
            self.width = self.model.text_model.config.project_dim
            self.max_length = 77
            self.vision_config = self.model.config.vision_config.to_dict()
            self.projection_dim = self.model.config.projection_dim
        else:
            raise CheckpointError(f"teacher {self.folder}: model_type {self.kind!r} is neither 'clip' nor 'altclip'")
        self.model.requires_grad_(False).eval().to(device)

    @torch.no_grad()
    def targets(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        device = next(self.model.parameters()).device
        ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)
        if self.kind == "clip":
            return self.model.text_model(input_ids=ids, attention_mask=mask).pooler_output.float()
        return self.model.text_model.retrieval_embedding(ids, mask).float()

    def shared_weights(self) -> dict[str, torch.Tensor]:
        """Image tower, both projections and logit scale, under AltCLIP's key names."""
        state = self.model.state_dict()
        keep = ("vision_model.", "visual_projection.", "text_projection.", "logit_scale")
        return {k: v.detach().cpu().clone() for k, v in state.items() if k.startswith(keep)}

    def image_processor_config(self) -> dict:
        path = self.folder / "preprocessor_config.json"
        if path.is_file():
            return json.loads(path.read_text())
        size = self.vision_config.get("image_size", 224)
        return {
            "crop_size": {"height": size, "width": size},
            "do_center_crop": True,
            "do_normalize": True,
            "do_resize": True,
            "do_convert_rgb": True,
            "image_processor_type": "CLIPImageProcessor",
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "resample": 3,
            "size": {"shortest_edge": size},
        }


def export_altclip(
    student: AltTextEncoder,
    tokenizer,
    teacher: Teacher,
    folder: Path,
    *,
    logit_scale: float | None = None,
    extra_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a complete AltCLIP folder (transformers layout, safetensors) around ``student``."""
    folder.mkdir(parents=True, exist_ok=True)
    text_config = {
        k: v
        for k, v in student.config.to_dict().items()
        if k not in ("architectures", "transformers_version", "model_type")
    }
    text_config.update(model_type="altclip_text_model", project_dim=student.config.project_dim)
    vision_config = {
        k: v for k, v in teacher.vision_config.items() if k not in ("transformers_version", "architectures")
    }
    vision_config["model_type"] = "altclip_vision_model"
    state = {f"text_model.{k}": v.detach().cpu() for k, v in student.state_dict().items()}
    shared = teacher.shared_weights()
    if extra_state:
        shared.update(extra_state)
    state.update(shared)
    scale = float(state["logit_scale"]) if logit_scale is None else logit_scale
    config = {
        "architectures": ["AltCLIPModel"],
        "model_type": "altclip",
        "projection_dim": teacher.projection_dim,
        "logit_scale_init_value": scale,
        "text_config": text_config,
        "vision_config": vision_config,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    save_safetensors(state, folder / "model.safetensors")
    tokenizer.save_pretrained(str(folder))
    (folder / "preprocessor_config.json").write_text(json.dumps(teacher.image_processor_config(), indent=2) + "\n")
    return folder
