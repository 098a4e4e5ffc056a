"""A plan's pipeline calls: one per batch, or one per image when several init images are sent."""

from PIL import Image

from altdiffusion.pipelines.seeds import MAX_SEED
from altdiffusion.serve.plans import Plan
from altdiffusion.serve.schemas import Img2ImgRequest, Txt2ImgRequest


def _plan(req, seed, init_images=()):
    return Plan("img2img" if init_images else "txt2img", req, "Euler", None, seed, None, (), None, 4, init_images)


def test_one_call_per_iteration_and_seeds_that_wrap():
    plan = _plan(Txt2ImgRequest(batch_size=2, n_iter=2), MAX_SEED - 1)
    assert plan.seeds == [MAX_SEED - 1, MAX_SEED, 0, 1]
    assert [(c.seed, c.count, c.init_image) for c in plan.calls(0)] == [(MAX_SEED - 1, 2, None)]
    assert [(c.seed, c.count) for c in plan.calls(1)] == [(0, 2)]


def test_several_init_images_take_turns_one_call_per_image():
    red, blue = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    req = Img2ImgRequest(init_images=["x", "y"], batch_size=3, n_iter=2)
    plan = _plan(req, 10, (red, blue))
    calls = plan.calls(1)
    assert [(c.seed, c.count) for c in calls] == [(13, 1), (14, 1), (15, 1)]
    assert [c.init_image for c in calls] == [red, blue, red]
