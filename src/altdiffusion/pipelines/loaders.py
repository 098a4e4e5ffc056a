"""What a pipeline can take on after loading, as diffusers' loader mixins do: another VAE, LoRAs,
textual-inversion embeddings, and the speed and memory modes. The state these methods use
(``memory``, ``speed``, ``merged_loras``, ``embeddings``, ``vae_source``, ``_own_vae``) is declared
in :class:`~altdiffusion.pipelines.alt_diffusion.AltDiffusionPipeline`'s ``__init__``."""

from __future__ import annotations

from pathlib import Path

import torch

from altdiffusion.pipelines.components import cast_module
from altdiffusion.pipelines.conditioning import token_embedding_width
from altdiffusion.pipelines.memory import apply_memory_mode, swap_offloaded
from altdiffusion.prompts.embeddings import EmbeddingDatabase


class PipelineLoaders:
    # ------------------------------------------------------------------ speed and memory

    def enable_memory_mode(self, mode: str) -> None:
        """``"balanced"``: components offloaded to the CPU when idle, VAE slicing and tiling;
        ``"low"``: sequential (layer by layer) offload too. See pipelines/memory.py."""
        self.memory = apply_memory_mode(self, mode)

    def enable_speed_mode(self, **options):
        """torch.compile of the UNet and VAE decoder, channels-last, fused QKV, on the CPU frozen weights;
        see pipelines/speed.py for the options."""
        from altdiffusion.pipelines.speed import apply_speed_mode

        self.speed = apply_speed_mode(self, **options)
        return self.speed

    def enable_modes(
        self,
        memory: str = "full",
        compile: bool = False,
        warm_up: dict | None = None,
        freeze: bool | None = None,
        int8: bool = False,
    ) -> float | None:
        """``--memory`` and ``--compile`` as `generate` and `serve` take them (and `generate`'s ``--int8``):
        the memory mode, then speed mode (``freeze`` and ``int8`` as :meth:`enable_speed_mode` takes them)
        warmed up on ``warm_up``'s call arguments (its shape bucket compiles now). Returns the warm-up's
        seconds, or None without speed mode."""
        if memory != "full":
            self.enable_memory_mode(memory)
        if not compile:
            return None
        from altdiffusion.pipelines.speed import timed_warm_up

        self.enable_speed_mode(freeze=freeze, int8=int8)
        return timed_warm_up(self, **(warm_up or {}))

    # ------------------------------------------------------------------ VAE swap

    def load_vae(self, source: str | Path | None, *, name: str | None = None) -> None:
        """Decode (and encode) with another VAE: an A1111 file or a diffusers folder (``name``: its
        "VAE" in infotexts, default the file name); None: the model's own. The memory and speed
        modes in force apply to it as they did to the one it replaces."""
        if source is None:
            vae, vae_source = self._own_vae, None
        else:
            from altdiffusion.pipelines.vae import load_vae

            vae, vae_source = load_vae(source, like=self._own_vae, name=name)
            home = torch.device("cpu") if self.memory.offloaded else self.device  # offloaded: it waits there
            cast_module(vae, home, self._own_vae.dtype)
        if vae is self.vae:
            return
        swap_offloaded(self.vae, vae)
        if self.speed is not None:
            from altdiffusion.pipelines.speed import compile_vae

            compile_vae(vae, self.speed)
        self.vae, self.vae_source, self._latent_to_rgb = vae, vae_source, None

    # ------------------------------------------------------------------ LoRA

    @property
    def loras(self) -> list[dict]:
        """The merged LoRAs' infos (name, path, hash, scale, format, layers), in merge order."""
        return list(self.merged_loras.infos)

    def load_lora(self, path: str | Path, scale: float = 1.0) -> dict:
        """Merge a LoRA (kohya or diffusers ``.safetensors``) into the weights; see pipelines/lora.py."""
        info = self.merged_loras.merge(self._lora_targets(), path, scale)
        self._weights_changed()
        return info

    def unload_lora(self) -> None:
        """Restore the weights every loaded LoRA changed, exactly."""
        self.merged_loras.restore(self._lora_targets())
        self._weights_changed()

    def _weights_changed(self) -> None:
        if self.speed is None:
            return
        from altdiffusion.pipelines.speed import recompile_frozen, refresh_fused_projections

        if self.speed.fused_qkv:  # the fused copies must follow to_q/to_k/to_v
            refresh_fused_projections(self.unet)
        if self.speed.int8 is not None:
            self.speed.int8.reset()
        if self.speed.frozen:
            recompile_frozen()

    def _lora_targets(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.unet, "text_encoder": self.text_encoder}

    # ------------------------------------------------------------------ textual inversion

    def load_embeddings(self, folder: str | Path) -> EmbeddingDatabase:
        """Use the embedding files in ``folder`` (A1111's embeddings/: the file stem is the trigger);
        files made for another width are skipped with the reason (``pipe.embeddings.skipped``)."""
        self.embeddings = EmbeddingDatabase.from_folder(folder, token_embedding_width(self.text_encoder))
        return self.embeddings
