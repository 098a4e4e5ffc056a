"""AltCLIP stage 1, teacher learning: distil a CLIP text tower into XLM-R on parallel text.

    target  t = teacher(english)                       (pooled EOS, before text_projection)
    student s = transformation(pre_LN(xlmr(x)))[:, 0]   for x = english and x = its translations
    loss      = mean ||s - t||^2   (or 1 - cos(s, t))

Dropout is 0 in the student (paper); the head maps XLM-R's width to the teacher's.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from altdiffusion.errors import CheckpointError, InvalidInputError
from altdiffusion.models.text_encoder import AltTextEncoder, text_config_from_dict
from altdiffusion.training.data import micro_batches, read_parallel_text
from altdiffusion.training.params import TrainSettings
from altdiffusion.training.settings import DistillSettings
from altdiffusion.training.teacher import Teacher, export_altclip


def build_student(source: str | Path, width: int, seed: int = 0) -> tuple[AltTextEncoder, object]:
    """An AltCLIP text tower whose encoder starts from an XLM-R folder (or an AltCLIP's text tower).

    The new head (``transformation``; ``pre_LN`` starts as identity scale) is initialised from
    ``seed``, so a rerun or a resumed run starts from the same student.
    """
    from transformers import AutoTokenizer, XLMRobertaModel

    from altdiffusion.hub import resolve_model
    from altdiffusion.models.loading import load_altclip, read_json

    folder = resolve_model(source)
    raw = read_json(folder / "config.json")
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if raw.get("model_type") == "altclip":
        student = load_altclip(folder).text_model
        if student.config.project_dim != width:
            raise InvalidInputError(
                f"student {folder} projects to {student.config.project_dim}-d but the teacher is {width}-d"
            )
        return student, tokenizer
    if raw.get("model_type") not in ("xlm-roberta", "roberta", "bert"):
        raise CheckpointError(f"student {folder}: model_type {raw.get('model_type')!r} is not an XLM-R-family encoder")
    config = text_config_from_dict(
        {**raw, "project_dim": width, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    )
    student = AltTextEncoder(config, head="clip")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bound = 1 / config.hidden_size**0.5  # nn.Linear's default range
        student.transformation.weight.uniform_(-bound, bound, generator=generator)
        student.transformation.bias.uniform_(-bound, bound, generator=generator)
    try:
        encoder = XLMRobertaModel.from_pretrained(str(folder), config=config, add_pooling_layer=False)
    except Exception as err:
        raise CheckpointError(f"student {folder}: cannot load XLM-R weights ({err})") from None
    student.roberta = encoder
    return student, tokenizer


class StudentModel(torch.nn.Module):
    """The trainable part, wrapped so gradient checkpointing can be switched on uniformly."""

    def __init__(self, text: AltTextEncoder):
        super().__init__()
        self.text = text

    def enable_gradient_checkpointing(self) -> None:
        self.text.roberta.gradient_checkpointing_enable()

    def forward(self, input_ids, attention_mask):
        return self.text.retrieval_embedding(input_ids, attention_mask)


class DistillTask:
    name = "clip-distill"

    def __init__(
        self,
        teacher: Teacher,
        student: AltTextEncoder,
        tokenizer,
        pairs,
        *,
        loss: str = "mse",
        seed: int = 0,
        max_length: int = 77,
    ):
        if loss not in ("mse", "cosine"):
            raise InvalidInputError(f"--loss must be mse or cosine, got {loss!r}")
        self.teacher, self.tokenizer, self.pairs = teacher, tokenizer, pairs
        self.model = StudentModel(student)
        self.loss_kind, self.seed, self.max_length = loss, seed, max_length

    def batches(self, start_step, micro, rank, world, grad_accum):
        return micro_batches(
            self.pairs,
            seed=self.seed,
            start_step=start_step,
            micro=micro,
            rank=rank,
            world=world,
            grad_accum=grad_accum,
        )

    def loss(self, model, batch):
        student_texts = [s for s, _ in batch]
        device = next(model.parameters()).device
        if next(self.teacher.model.parameters()).device != device:  # accelerate places only the student
            self.teacher.model.to(device)
        target = self.teacher.targets([t for _, t in batch])
        tok = self.tokenizer(
            student_texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        pred = model(tok.input_ids.to(device), tok.attention_mask.to(device)).float()
        if self.loss_kind == "mse":
            loss = F.mse_loss(pred, target)
        else:
            loss = (1 - F.cosine_similarity(pred, target, dim=-1)).mean()
        return loss, {}

    def export(self, model, folder: Path) -> None:
        export_altclip(model.text, self.tokenizer, self.teacher, folder)


def run(settings: DistillSettings, training: TrainSettings) -> Path:
    """Teacher learning from ``settings`` under the loop's ``training`` settings; the model folder."""
    from altdiffusion.training.loop import train

    teacher = Teacher(settings.teacher)
    student, tokenizer = build_student(settings.student, teacher.width, seed=training.seed)
    pairs = read_parallel_text(settings.data)
    task = DistillTask(teacher, student, tokenizer, pairs, loss=settings.loss, seed=training.seed)
    return train(task, training)
