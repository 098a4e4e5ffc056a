"""int8 UNet for the CPU speed mode: static post-training quantization, run by oneDNN's VNNI kernels.

On a CPU without AMX, bf16 about doubles fp32's matmul peak (2.1-2.3x measured here), and a VNNI
int8 dot product does twice the multiply-adds of a bf16 one per instruction; the speed mode in bf16
already runs at about 83% of the bf16 peak, so only int8 goes further (benchmarks/README.md).
The recipe is PyTorch's PT2E flow with torchao's ``X86InductorQuantizer`` (what torch lacks since
it moved there): per-channel int8 weights and per-tensor int8 activations at every convolution and
linear layer, everything else in float32; inductor with freezing then fuses each quantize,
int8 matmul and dequantize into one oneDNN call.

Calibration (the activations' ranges) must not depend on what a user generated before, or a seed
would not reproduce: each shape bucket is calibrated on a fixed trajectory of its own, the same in
every process: DDIM from seeded noise over ``CALIBRATION_STEPS`` steps with classifier-free
guidance, conditioned on fixed prompts (``CALIBRATION_PROMPTS``) against the empty prompt, run
through the observed float UNet. Buckets are the speed mode's: (batch, latent height, width,
conditioning length); at most ``max_shapes`` are quantized and a call in a further bucket runs the
float UNet (correct, slower), as compiled graphs do past ``recompile_limit``. Quantizing a bucket
costs an export, the calibration and a compile: minutes at full size (benchmarks/README.md).
Calibrated ranges are cached on disk (pipelines/int8_ranges.py), so a later process with the same
weights skips the calibration and converts to the same graph.

Weights changed afterwards (a LoRA) are not seen by the quantized graphs: :meth:`Int8UNet.reset`
drops them and each bucket quantizes again on its next call.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from diffusers import DDIMScheduler
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

from altdiffusion.errors import InvalidInputError
from altdiffusion.pipelines.int8_ranges import RangeCache, calibration_key, weights_digest

CALIBRATION_PROMPTS = (
    "一只穿着唐装的猫，国画风格，古建筑",
    "a red fox in the snow, oil painting, detailed",
    "portrait of an old fisherman, soft light, photograph",
    "une ville futuriste au coucher du soleil",
)
CALIBRATION_STEPS = 10
CALIBRATION_GUIDANCE = 7.5
CALIBRATION_FORMAT = 1  # raise it when the calibration changes otherwise: cached ranges then miss
logger = logging.getLogger(__name__)


def quantize_unet(pipe, max_shapes: int, ranges_dir: str | Path) -> Int8UNet:
    """``pipe``'s UNet in int8 from its next call on, calibrated ranges cached in ``ranges_dir``; one
    clear error where that cannot run."""
    if pipe.device.type != "cpu":
        raise InvalidInputError(
            f"int8 runs on the CPU (oneDNN's VNNI kernels), not on {pipe.device.type}; leave out --int8 there"
        )
    if not has_vnni():
        raise InvalidInputError(
            "this CPU has no int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI or AMX), so int8 would be "
            "slower than bf16; leave out --int8"
        )
    import_torchao()
    cond, uncond = pipe.encode_prompt(list(CALIBRATION_PROMPTS))
    return Int8UNet(pipe.unet, pipe.scheduler.config, uncond[:1], cond, max_shapes, RangeCache(ranges_dir))


def has_vnni() -> bool:
    """Whether this CPU has the int8 dot-product instructions oneDNN's int8 kernels need."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = set(cpuinfo.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def import_torchao() -> None:
    """Import torchao's PT2E quantizer and register its int8 fusions with inductor, without the
    warnings its CUDA extensions print on a CPU-only torch."""
    quiet = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [log.level for log in quiet]
    for log in quiet:
        log.setLevel(logging.ERROR)
    try:
        import torchao.quantization.pt2e.inductor_passes.x86  # noqa: F401  (registers the fusions)
    except ImportError as error:
        raise InvalidInputError(
            f"int8 needs torchao ({error}); install it with: pip install 'altdiffusion[int8]'"
        ) from None
    finally:
        for log, level in zip(quiet, levels):
            log.setLevel(level)


class _PlainUNet(torch.nn.Module):
    """The UNet as a function of three tensors, the form torch.export takes."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]


class Int8UNet:
    """Replaces ``unet``'s forward (as ``module.compile`` does) with int8 graphs, one per shape bucket.

    ``uncond`` and ``cond``: the calibration's conditioning, (1, 77, D) and (P, 77, D).
    ``ranges``: where calibrated ranges are kept between processes.
    """

    def __init__(
        self, unet, scheduler_config, uncond: torch.Tensor, cond: torch.Tensor, max_shapes: int, ranges: RangeCache
    ):
        self.unet = unet
        self.scheduler_config = dict(scheduler_config)
        self.uncond, self.cond = uncond.float(), cond.float()
        self.max_shapes = max_shapes
        self.ranges = ranges
        self.graphs: dict[tuple, torch.nn.Module] = {}
        self.float_buckets: set[tuple] = set()  # buckets past max_shapes, run in float (warned once each)
        self.cached_buckets: set[tuple] = set()  # buckets whose ranges came from ``ranges``, not a calibration
        self.weights: str | None = None  # the UNet's weights_digest, taken when a bucket first needs it
        unet._compiled_call_impl = self

    def __call__(self, sample, timestep, encoder_hidden_states=None, return_dict: bool = True, **unsupported):
        if unsupported or encoder_hidden_states is None:
            raise InvalidInputError(
                f"the int8 UNet takes a sample, a timestep and encoder_hidden_states only, not "
                f"{sorted(unsupported) or 'no conditioning'}; turn int8 off for this model (--compile without --int8)"
            )
        bucket = (*sample.shape, *encoder_hidden_states.shape[1:])
        graph = self.graphs[bucket] if bucket in self.graphs else self._quantize(bucket)
        if graph is None:
            return self.unet.forward(
                sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=return_dict
            )
        t = torch.as_tensor(timestep, dtype=torch.float32, device=sample.device)
        if t.numel() != 1:
            raise InvalidInputError(f"the int8 UNet takes one timestep per call, got {t.numel()}")
        t = t.reshape(())
        with torch._inductor.config.patch(freezing=True):  # dynamo reads it as it traces, as in speed.py
            noise = graph(sample.float(), t, encoder_hidden_states.float())
        noise = noise.to(sample.dtype)
        return UNet2DConditionOutput(sample=noise) if return_dict else (noise,)

    def reset(self) -> None:
        """Drop every quantized graph: the weights changed, so each bucket quantizes again."""
        self.graphs.clear()
        self.float_buckets.clear()
        self.cached_buckets.clear()
        self.weights = None

    # ------------------------------------------------------------------ quantizing one bucket

    def _quantize(self, bucket: tuple) -> torch.nn.Module | None:
        """Export, calibrate (or read the ranges cached by an earlier calibration) and convert the bucket's
        graph (it compiles on its first call)."""
        if len(self.graphs) >= self.max_shapes:
            if bucket not in self.float_buckets:
                self.float_buckets.add(bucket)
                logger.warning("int8: %d shape buckets quantized already; %s runs in float", self.max_shapes, bucket)
            return None
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

        latents, embeds, guided = self._calibration_inputs(bucket)
        example = (torch.cat([latents] * 2) if guided else latents, torch.tensor(999.0), embeds)
        plain = self._float_copy()
        key = self._calibration_key(bucket)
        observed, cached = self._observed(plain, example, key)
        if cached:
            self.cached_buckets.add(bucket)
        else:
            self._calibrate(observed, latents, embeds, guided)
            self.ranges.save(key, observed)
        converted = convert_pt2e(observed)
        _release_float_weights(plain, converted)
        self.graphs[bucket] = torch.compile(converted, dynamic=False)
        return self.graphs[bucket]

    def _float_copy(self) -> _PlainUNet:
        """A float32 copy of the UNet to export (the pipeline's own keeps its dtype and this forward)."""
        del self.unet._compiled_call_impl  # not copied: the copy runs the UNet's own forward
        try:
            return _PlainUNet(copy.deepcopy(self.unet).float())
        finally:
            self.unet._compiled_call_impl = self

    def _observed(self, plain: _PlainUNet, example: tuple, key: str) -> tuple[torch.fx.GraphModule, bool]:
        """``plain`` exported and prepared with observers, and whether they hold ranges from the cache
        (else they are empty, to calibrate)."""
        observed = _prepared(plain, example)
        state = self.ranges.read(key, observed)
        if state is None:
            return observed, False
        try:
            observed.load_state_dict(state, strict=False)
        except RuntimeError as error:  # shapes that do not fit: some observers may hold part of them
            self.ranges.unusable(key, error)
            return _prepared(plain, example), False
        logger.info("int8: calibrated ranges of %s read from %s", key[:12], self.ranges.path(key))
        return observed, True

    def _calibration_key(self, bucket: tuple) -> str:
        """The :class:`RangeCache` key of ``bucket``'s calibration: everything its ranges depend on."""
        if self.weights is None:
            self.weights = weights_digest(self.unet)
        return calibration_key(
            self.weights, calibration_recipe(bucket, self.scheduler_config), [self.uncond, self.cond]
        )

    def _calibration_inputs(self, bucket: tuple) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Seeded noise latents, the calibration conditioning at the bucket's length, and whether the
        bucket's batch has classifier-free guidance's two halves (empty prompt, then prompts)."""
        batch, *latent_shape, tokens, _ = bucket
        guided = batch % 2 == 0
        n = batch // 2 if guided else batch
        embeds = self.cond[torch.arange(n) % len(self.cond)]
        if guided:
            embeds = torch.cat([self.uncond.expand(n, -1, -1), embeds])
        embeds = embeds.repeat(1, -(-tokens // embeds.shape[1]), 1)[:, :tokens]  # chunks as the prompt has
        latents = torch.randn((n, *latent_shape), generator=torch.Generator().manual_seed(0))
        return latents, embeds, guided

    def _calibrate(self, observed, latents: torch.Tensor, embeds: torch.Tensor, guided: bool) -> None:
        """DDIM through ``observed`` (the float32 UNet recording its activations' ranges)."""
        scheduler = DDIMScheduler.from_config(self.scheduler_config)
        scheduler.set_timesteps(CALIBRATION_STEPS)
        latents = latents * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(torch.cat([latents] * 2) if guided else latents, t)
            noise = observed(model_input, t.float(), embeds)
            if guided:
                uncond, text = noise.chunk(2)
                noise = uncond + CALIBRATION_GUIDANCE * (text - uncond)
            latents = scheduler.step(noise, t, latents).prev_sample


def calibration_recipe(bucket: tuple, scheduler_config: dict) -> dict:
    """What a bucket's calibration depends on besides the weights and conditioning, the same in every
    process: the scheduler's settings without diffusers' private entries (``_use_default_values`` is
    a list made from a set, so its order changes with Python's hash seed)."""
    import torchao

    scheduler = {name: value for name, value in scheduler_config.items() if not name.startswith("_")}
    return {
        "format": CALIBRATION_FORMAT, "bucket": list(bucket), "steps": CALIBRATION_STEPS,
        "guidance": CALIBRATION_GUIDANCE, "scheduler": scheduler,
        "torch": torch.__version__, "torchao": torchao.__version__,
    }  # fmt: skip


def _release_float_weights(plain: torch.nn.Module, converted: torch.fx.GraphModule) -> None:
    """Free the float32 copy's tensors that ``converted`` does not read. Conversion folds each weight into
    an int8 copy, but the float32 originals stay reachable from its erased nodes' meta (real tensors,
    kept alive by provenance records): 3.2 GB at full size, resident for nothing. Emptying their
    storage frees them whoever holds them; the biases and anything else the graph reads are kept."""
    read = set()
    for node in converted.graph.nodes:
        if node.op == "get_attr":
            value = converted
            for part in node.target.split("."):
                value = getattr(value, part)
            if isinstance(value, torch.Tensor):
                read.add(value.untyped_storage().data_ptr())
    for tensor in plain.state_dict().values():
        if tensor.untyped_storage().data_ptr() not in read:
            tensor.untyped_storage().resize_(0)


def _prepared(plain: _PlainUNet, example: tuple) -> torch.fx.GraphModule:
    """``plain`` exported on ``example`` and prepared for int8: observers at every quantized input."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    return prepare_pt2e(torch.export.export(plain, example).module(), _quantizer())


def _quantizer():
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
    return quantizer
