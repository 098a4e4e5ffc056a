"""LoRA files: read both formats the ecosystem uses, convert between them, merge into a pipeline.

Two layouts of the same numbers (``A`` = down projection ``(r, in)``, ``B`` = up ``(out, r)``):

- diffusers / peft (``pytorch_lora_weights.safetensors``)::

      unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight   (r, in)
      unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight   (out, r)

  alpha in the metadata entry ``lora_adapter_metadata`` (JSON, ``{"unet.lora_alpha": .., "unet.r": ..}``,
  as diffusers writes it); without it alpha = rank (diffusers' default).

- kohya / AUTOMATIC1111 / ComfyUI::

      lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight  (= lora_A)
      lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight    (= lora_B)
      lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha             (0-d tensor)

  metadata ``ss_network_dim``, ``ss_network_alpha``, ``ss_network_module: networks.lora``.
  The text encoder uses ``lora_te_`` / ``text_encoder.`` in place of ``lora_unet_`` / ``unet.``.

Dots become underscores in kohya names, and module names contain underscores themselves, so
kohya -> module path needs the model's module names (:func:`kohya_to_peft` takes them).

Loading merges ``W += scale * (alpha / rank) * B @ A`` into the weights of the touched modules
(no extra layers, no speed cost), keeping a copy of each touched weight so
:func:`unload_loras` restores the model bit for bit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from altdiffusion.errors import CheckpointError, InvalidInputError

KOHYA_PREFIXES = {"lora_unet_": "unet", "lora_te_": "text_encoder"}
PEFT_PREFIXES = {"unet.": "unet", "text_encoder.": "text_encoder"}
LORA_ADAPTER_METADATA_KEY = "lora_adapter_metadata"


@dataclass
class LoraLayer:
    """One adapted module: ``root`` ("unet" / "text_encoder"), its module path, A, B, alpha."""

    root: str
    module: str
    down: torch.Tensor  # lora_A / lora_down: (r, in[, kh, kw])
    up: torch.Tensor  # lora_B / lora_up: (out, r[, 1, 1])
    alpha: float

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])


# ------------------------------------------------------------------------------ names


def kohya_name(root: str, module: str) -> str:
    """``("unet", "down_blocks.0.attentions.0.proj_in")`` -> ``lora_unet_down_blocks_0_attentions_0_proj_in``."""
    prefix = {v: k for k, v in KOHYA_PREFIXES.items()}[root]
    return prefix + module.replace(".", "_")


def module_lookup(module_names) -> dict[str, str]:
    """Underscored name -> dotted module path, for resolving kohya names against a model."""
    return {name.replace(".", "_"): name for name in module_names if name}


# ------------------------------------------------------------------------------ formats


def peft_to_kohya(
    state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A diffusers/peft LoRA state dict (+ its safetensors metadata) -> kohya tensors + metadata."""
    layers = _parse_peft(state, metadata or {})
    return layers_to_kohya(layers)


def kohya_to_peft(
    tensors: dict[str, torch.Tensor], module_names: dict[str, list[str]], metadata: dict[str, str] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """kohya tensors -> diffusers/peft state dict + metadata. ``module_names`` maps "unet" /
    "text_encoder" to that model's module names (``[n for n, _ in unet.named_modules()]``)."""
    layers = _parse_kohya(tensors, {root: module_lookup(names) for root, names in module_names.items()})
    return layers_to_peft(layers)


def layers_to_kohya(
    layers: list[LoraLayer], extra_metadata: dict[str, str] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors: dict[str, torch.Tensor] = {}
    for layer in layers:
        name = kohya_name(layer.root, layer.module)
        tensors[f"{name}.lora_down.weight"] = layer.down.contiguous()
        tensors[f"{name}.lora_up.weight"] = layer.up.contiguous()
        tensors[f"{name}.alpha"] = torch.tensor(float(layer.alpha), dtype=torch.float32)
    ranks = {layer.rank for layer in layers}
    alphas = {float(layer.alpha) for layer in layers}
    metadata = {"ss_network_module": "networks.lora"}
    if len(ranks) == 1:
        metadata["ss_network_dim"] = str(ranks.pop())
    if len(alphas) == 1:
        alpha = alphas.pop()
        metadata["ss_network_alpha"] = str(int(alpha) if alpha.is_integer() else alpha)
    metadata.update(extra_metadata or {})
    return tensors, metadata


def layers_to_peft(
    layers: list[LoraLayer], extra_metadata: dict[str, str] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    state: dict[str, torch.Tensor] = {}
    adapter: dict[str, object] = {}
    for layer in layers:
        state[f"{layer.root}.{layer.module}.lora_A.weight"] = layer.down.contiguous()
        state[f"{layer.root}.{layer.module}.lora_B.weight"] = layer.up.contiguous()
    for root in sorted({layer.root for layer in layers}):
        mine = [layer for layer in layers if layer.root == root]
        rank, alpha = mine[0].rank, mine[0].alpha
        adapter[f"{root}.r"] = rank
        adapter[f"{root}.lora_alpha"] = int(alpha) if float(alpha).is_integer() else alpha
        adapter[f"{root}.target_modules"] = sorted({layer.module for layer in mine})
        ranks = {m.module: m.rank for m in mine if m.rank != rank}
        alphas = {m.module: m.alpha for m in mine if m.alpha != alpha}
        if ranks:
            adapter[f"{root}.rank_pattern"] = ranks
        if alphas:
            adapter[f"{root}.alpha_pattern"] = alphas
    metadata = {"format": "pt", LORA_ADAPTER_METADATA_KEY: json.dumps(adapter, indent=2, sort_keys=True)}
    metadata.update(extra_metadata or {})
    return state, metadata


def _parse_peft(state: dict[str, torch.Tensor], metadata: dict[str, str]) -> list[LoraLayer]:
    try:
        adapter = json.loads(metadata.get(LORA_ADAPTER_METADATA_KEY) or "{}")
    except ValueError:
        adapter = {}
    groups: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    unknown = []
    for key, tensor in state.items():
        root = next((r for p, r in PEFT_PREFIXES.items() if key.startswith(p)), None)
        body = key[len(root) + 1 :] if root else key
        for suffix, part in (
            (".lora_A.weight", "down"),
            (".lora_B.weight", "up"),
            (".lora.down.weight", "down"),
            (".lora.up.weight", "up"),
            (".alpha", "alpha"),
        ):
            if root and body.endswith(suffix):
                groups.setdefault((root, body[: -len(suffix)]), {})[part] = tensor
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"not LoRA keys: {_names(unknown)}")
    layers = []
    for (root, module), parts in groups.items():
        if "down" not in parts or "up" not in parts:
            raise CheckpointError(
                f"LoRA layer {root}.{module} lacks its {'lora_A' if 'down' not in parts else 'lora_B'} weight"
            )
        _check_matrices(f"{root}.{module}", parts)
        rank = int(parts["down"].shape[0])
        if "alpha" in parts:
            alpha = float(parts["alpha"].item())
        else:
            pattern = adapter.get(f"{root}.alpha_pattern") or {}
            alpha = pattern.get(module, adapter.get(f"{root}.lora_alpha", rank))
        layers.append(LoraLayer(root, module, parts["down"], parts["up"], float(alpha)))
    return layers


def _parse_kohya(tensors: dict[str, torch.Tensor], lookups: dict[str, dict[str, str]]) -> list[LoraLayer]:
    groups: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    unknown = []
    for key, tensor in tensors.items():
        name, _, part = key.partition(".")
        root = next((r for p, r in KOHYA_PREFIXES.items() if name.startswith(p)), None)
        kind = {"lora_down.weight": "down", "lora_up.weight": "up", "alpha": "alpha"}.get(part)
        module = lookups.get(root, {}).get(name[len(_prefix_of(root)) :]) if root else None
        if kind is None or module is None:
            unknown.append(key)
            continue
        groups.setdefault((root, module), {})[kind] = tensor
    if unknown:
        raise CheckpointError(f"LoRA keys that match no layer of this model: {_names(unknown)}")
    layers = []
    for (root, module), parts in groups.items():
        if "down" not in parts or "up" not in parts:
            raise CheckpointError(
                f"LoRA layer {kohya_name(root, module)} lacks its lora_{'down' if 'down' not in parts else 'up'} weight"
            )
        _check_matrices(kohya_name(root, module), parts)
        rank = int(parts["down"].shape[0])
        alpha = float(parts["alpha"].item()) if "alpha" in parts else float(rank)
        layers.append(LoraLayer(root, module, parts["down"], parts["up"], alpha))
    return layers


def _check_matrices(name: str, parts: dict[str, torch.Tensor]) -> None:
    if parts["down"].dim() < 2 or parts["up"].dim() < 2 or parts.get("alpha", torch.zeros(())).numel() != 1:
        raise CheckpointError(
            f"LoRA layer {name}: malformed tensors (down {tuple(parts['down'].shape)}, up {tuple(parts['up'].shape)})"
        )


def _prefix_of(root: str) -> str:
    return {v: k for k, v in KOHYA_PREFIXES.items()}[root]


def _names(keys: list[str], limit: int = 5) -> str:
    keys = sorted(keys)
    more = f" (and {len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def detect_format(keys) -> str:
    """ "kohya" or "peft" from the key names (a file mixing both is refused)."""
    keys = list(keys)
    if not keys:
        raise CheckpointError("the LoRA file holds no tensors")
    kohya = [k for k in keys if k.startswith(tuple(KOHYA_PREFIXES))]
    if kohya and len(kohya) == len(keys):
        return "kohya"
    if not kohya:
        return "peft"
    raise CheckpointError(
        f"LoRA file mixes kohya and diffusers key names: {_names(kohya[:2] + [k for k in keys if k not in kohya][:2])}"
    )


# ------------------------------------------------------------------------------ files


def read_lora_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"LoRA file {path} does not exist")
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = dict(fh.metadata() or {})
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors LoRA file ({err})") from None
    return tensors, metadata


def lora_hash(path: str | Path) -> str:
    """A1111's short LoRA hash (the "addnet" hash): sha256 of the file after the safetensors
    header, first 12 hex digits. It is what A1111 writes in ``Lora hashes`` and what civitai indexes."""
    from altdiffusion.hashing import safetensors_body_sha256

    return safetensors_body_sha256(path)[:12]


def read_layers(path: str | Path, models: dict[str, torch.nn.Module]) -> tuple[list[LoraLayer], str]:
    """The layers of a LoRA file in either format, checked against ``models`` (names and shapes),
    and the format ("kohya" or "peft")."""
    tensors, metadata = read_lora_file(path)
    try:
        fmt = detect_format(tensors)
        if fmt == "kohya":
            lookups = {root: module_lookup(n for n, _ in model.named_modules()) for root, model in models.items()}
            layers = _parse_kohya(tensors, lookups)
        else:
            layers = _parse_peft(tensors, metadata)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    modules = {root: dict(model.named_modules()) for root, model in models.items()}
    missing, bad = [], []
    for layer in layers:
        target = modules.get(layer.root, {}).get(layer.module)
        weight = getattr(target, "weight", None)
        if not isinstance(target, (torch.nn.Linear, torch.nn.Conv2d)) or weight is None:
            missing.append(f"{layer.root}.{layer.module}")
            continue
        out_f, in_f = weight.shape[0], weight.shape[1]
        down, up = layer.down, layer.up
        fits = (
            down.dim() >= 2
            and up.dim() >= 2
            and up[0].numel() == layer.rank
            and (up.shape[0], down.shape[1]) == (out_f, in_f)
        )
        if not fits or out_f * down[0].numel() != weight.numel():
            shape = (
                f"{down.shape[1]}->{up.shape[0]}"
                if down.dim() >= 2 and up.dim() >= 2
                else f"{tuple(down.shape)}, {tuple(up.shape)}"
            )
            bad.append(f"{layer.root}.{layer.module} (LoRA {shape}, layer {in_f}->{out_f})")
    if missing:
        raise CheckpointError(f"{path}: LoRA layers that match no layer of this model: {_names(missing)}")
    if bad:
        raise CheckpointError(f"{path}: LoRA shapes do not fit this model: {_names(bad, 3)}")
    return layers, fmt


# ------------------------------------------------------------------------------ merging


def _delta(layer: LoraLayer, weight: torch.Tensor) -> torch.Tensor:
    up = layer.up.to(weight.device, torch.float32).flatten(1)
    down = layer.down.to(weight.device, torch.float32).flatten(1)
    return (up @ down).reshape(weight.shape) * (layer.alpha / layer.rank)


class MergedLoras:
    """The LoRAs merged into one pipeline's weights, in order, and the original weights they changed.

    ``models`` maps "unet" / "text_encoder" to the pipeline's current modules; they are passed
    on every call (not kept) because a pipeline's components are swappable.
    """

    def __init__(self) -> None:
        self.infos: list[dict] = []  # {"name", "path", "hash", "scale", "format", "layers"} per merged file
        self.originals: dict[tuple[str, str], torch.Tensor] = {}  # (root, module) -> weight before any LoRA

    @torch.no_grad()
    def merge(self, models: dict[str, torch.nn.Module], path: str | Path, scale: float = 1.0) -> dict:
        """Merge a LoRA file (kohya or diffusers format) at ``scale``; stackable. Returns its info."""
        if not isinstance(scale, (int, float)) or scale != scale:
            raise InvalidInputError(f"LoRA scale must be a number, got {scale!r}")
        layers, fmt = read_layers(path, models)
        modules = {root: dict(model.named_modules()) for root, model in models.items()}
        for layer in layers:
            weight = modules[layer.root][layer.module].weight
            self.originals.setdefault((layer.root, layer.module), weight.detach().clone())
            merged = weight.detach().to(torch.float32) + float(scale) * _delta(layer, weight)
            weight.copy_(merged.to(weight.dtype))
        info = {
            "name": Path(path).stem,
            "path": str(path),
            "hash": lora_hash(path),
            "scale": float(scale),
            "format": fmt,
            "layers": len(layers),
        }
        self.infos.append(info)
        return info

    @torch.no_grad()
    def restore(self, models: dict[str, torch.nn.Module]) -> None:
        """Put back every weight a LoRA touched, bit for bit."""
        for (root, module), original in self.originals.items():
            models[root].get_submodule(module).weight.copy_(original)
        self.originals.clear()
        self.infos.clear()

    def names(self) -> set[str]:
        return {info["name"] for info in self.infos}

    def hashes(self) -> str | None:
        """A1111's ``Lora hashes`` infotext value, ``"name: hash, name: hash"``; None without LoRAs."""
        return ", ".join(f"{info['name']}: {info['hash']}" for info in self.infos) or None


def parse_lora_arg(text: str) -> tuple[str, float]:
    """``FILE[:SCALE]``: a trailing ``:number`` is the scale (default 1.0). A path with ':' in it
    works when it does not end in ``:number`` (``C:\\x.safetensors`` is a path; add ``:1`` to be sure)."""
    path, sep, tail = text.rpartition(":")
    if sep and path:
        try:
            return path, float(tail)
        except ValueError:
            pass
    return text, 1.0
