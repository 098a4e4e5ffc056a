"""AltCLIP training on a tiny world: teacher learning, then contrastive learning.

Teacher: a tiny English CLIP; student: a tiny XLM-R; data: an en-zh parallel grammar of
scenes (size, colour, shape, place) with 15% of the scenes held out of all training.
"""

import json
from pathlib import Path

import pytest
import torch

from altdiffusion import load_clip
from altdiffusion.training.contrastive import ContrastiveTask
from altdiffusion.training.data import read_parallel_text
from altdiffusion.training.distill import DistillTask, build_student
from altdiffusion.training.loop import train
from altdiffusion.training.params import TrainSettings
from altdiffusion.training.teacher import Teacher
from tests.training import grammar

DISTILL_STEPS = 600
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def record(name: str, value) -> None:
    """Keep measured numbers as a test artifact (test-artifacts/clip-training.json)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "clip-training.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[name] = value
    path.write_text(json.dumps(data, indent=2) + "\n")


def _settings(output_dir: Path, *, steps: int, lr: float, log_every: int = 10) -> TrainSettings:
    """The training settings of every stage these tests run: batch 32, 20 warm-up steps, no checkpoints."""
    return TrainSettings(
        output_dir=output_dir,
        steps=steps,
        batch_size=32,
        lr=lr,
        warmup_steps=20,
        log_every=log_every,
        save_every=10**6,
        progress=False,
        tensorboard=False,
    )


@pytest.fixture(scope="session")
def distilled(distill_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("distilled")
    teacher = Teacher(distill_world["teacher"])
    student, tokenizer = build_student(distill_world["student"], teacher.width)
    task = DistillTask(teacher, student, tokenizer, read_parallel_text([distill_world["train"]]), loss="mse")
    folder = train(task, _settings(out, steps=DISTILL_STEPS, lr=1e-3, log_every=20))
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return {"folder": folder, "log": log, "teacher": teacher}


def _top1(queries: torch.Tensor, keys: torch.Tensor) -> float:
    return ((queries @ keys.t()).argmax(1) == torch.arange(len(queries))).float().mean().item()


def test_teacher_learning_loss_falls_tenfold(distilled):
    losses = [r["loss"] for r in distilled["log"]]
    record("distill_loss_first_last", [losses[0], losses[-1]])
    assert losses[0] / losses[-1] >= 10, f"loss went from {losses[0]:.4g} to {losses[-1]:.4g}"


def test_chinese_retrieves_english_translation_on_held_out(distill_world, distilled):
    clip = load_clip(distilled["folder"])
    held = distill_world["held"]
    zh = clip.embed_text([grammar.chinese(*s) for s in held])
    en = clip.embed_text([grammar.english(*s) for s in held])
    top1 = _top1(zh, en)
    record("heldout_zh_to_en_top1", top1)
    assert top1 >= 0.9, f"zh -> en top-1 on {len(held)} held-out pairs: {top1:.2%}"


def test_export_is_a_transformers_altclip(distilled):
    from transformers import AltCLIPModel

    clip = load_clip(distilled["folder"])
    reference = AltCLIPModel.from_pretrained(str(distilled["folder"])).eval()
    batch = clip.tokenizer(["一个红色的圆形", "a red circle"], padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = reference.get_text_features(**batch).pooler_output
    ours = clip.model.encode_text(batch.input_ids, batch.attention_mask)
    assert torch.allclose(theirs, ours, atol=1e-5)
    # the student inherits the teacher's text projection and image tower
    teacher = distilled["teacher"].model
    assert torch.equal(clip.model.text_projection.weight, teacher.text_projection.weight)
    assert torch.equal(clip.model.visual_projection.weight, teacher.visual_projection.weight)


def _image_text_r1(clip, scenes) -> float:
    images = clip.embed_image([grammar.render(*s) for s in scenes])
    texts = clip.embed_text([grammar.chinese(*s) for s in scenes])
    return _top1(texts, images)


def _train_raising_retrieval(task, distilled, held, run_dir, *, steps: int, name: str):
    """Train ``task``; held-out zh text->image R@1 (recorded as ``name``) must rise by over 10 points
    from the distilled model's. The trained folder and its CLIP."""
    folder = train(task, _settings(run_dir, steps=steps, lr=2e-3))
    before = _image_text_r1(load_clip(distilled["folder"]), held)
    after_clip = load_clip(folder)
    after = _image_text_r1(after_clip, held)
    record(name, [before, after])
    assert after > before + 0.1, f"held-out zh text->image R@1 {before:.2%} -> {after:.2%}"
    return folder, after_clip


def test_contrastive_stage_raises_retrieval_and_skips_corrupt_images(distill_world, distilled, tmp_path):
    train_scenes, held = grammar.split()
    shards = grammar.write_shards(tmp_path / "shards", train_scenes, per_shard=150, corrupt=3)
    task = ContrastiveTask(distilled["folder"], str(shards), seed=0)
    frozen_before = {k: v.clone() for k, v in task.clip.vision_model.state_dict().items()}
    folder, after_clip = _train_raising_retrieval(
        task, distilled, held, tmp_path / "run", steps=400, name="heldout_zh_text_to_image_r1_before_after"
    )
    report = json.loads((folder / "data_report.json").read_text())
    assert report["skipped"].get("corrupt image", 0) >= 3
    for key, value in after_clip.model.vision_model.state_dict().items():
        assert torch.equal(value, frozen_before[key]), f"frozen image tower changed: {key}"


def test_image_tower_stage_keeps_the_text_tower_and_raises_retrieval(distill_world, distilled, tmp_path):
    """`--train-vision --freeze-text`: the image tower learns; every text weight (what an AltDiffusion
    conditioned on this text tower reads) stays bit for bit."""
    train_scenes, held = grammar.split()
    shards = grammar.write_shards(tmp_path / "shards", train_scenes, per_shard=150)
    task = ContrastiveTask(distilled["folder"], str(shards), seed=0, train_vision=True, freeze_text=True)
    text_before = {k: v.clone() for k, v in task.clip.text_model.state_dict().items()}
    projection_before = task.clip.text_projection.weight.clone()
    vision_before = {k: v.clone() for k, v in task.clip.vision_model.state_dict().items()}
    _, after_clip = _train_raising_retrieval(
        task, distilled, held, tmp_path / "run", steps=150, name="heldout_zh_text_to_image_r1_before_after_image_tower"
    )
    for key, value in after_clip.model.text_model.state_dict().items():
        assert torch.equal(value, text_before[key]), f"frozen text tower changed: {key}"
    assert torch.equal(after_clip.model.text_projection.weight, projection_before)
    vision_after = after_clip.model.vision_model.state_dict()
    assert sum(not torch.equal(vision_after[k], v) for k, v in vision_before.items()) > 10, (
        "the image tower stood still"
    )


def test_freeze_text_without_train_vision_says_so():
    from altdiffusion.errors import InvalidInputError
    from altdiffusion.training.settings import ContrastiveSettings

    with pytest.raises(InvalidInputError, match="--freeze-text leaves nothing to train without --train-vision"):
        ContrastiveSettings(model="m", shards=["s"], freeze_text=True)
