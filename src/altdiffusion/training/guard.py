"""Stopping a diverging run at the step it diverges, before it can export a broken model.

A non-finite loss or gradient is never recoverable by training on: AdamW's moments keep the
NaN forever. The run stops with one error naming the step, the likely causes and the last good
checkpoint; earlier checkpoints are left alone. Under ``--mixed-precision fp16`` an infinite
gradient is the gradient scaler's normal signal to skip the step and halve the scale, so those
are counted instead, and only a long run of them in a row stops training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from altdiffusion.errors import TrainingDivergedError
from altdiffusion.training.params import TrainSettings
from altdiffusion.training.precision import non_finite

if TYPE_CHECKING:
    from accelerate import Accelerator

# The scaler halves its scale at each skip: 20 in a row is a factor of a million, far more than
# any one batch's overflow needs, so the gradients themselves are broken.
MAX_SKIPPED_IN_A_ROW = 20


class DivergenceGuard:
    def __init__(self, acc: Accelerator, settings: TrainSettings, params: list[torch.nn.Parameter]):
        self.acc, self.settings, self.params = acc, settings, params
        # A gradient scaler (fp16 on a GPU) skips overflowing steps itself; where accelerate runs
        # fp16 without one (CPU), an infinite gradient must stop the run like any other.
        self.scaled = getattr(acc, "scaler", None) is not None
        self.skipped_total = 0
        self.skipped_in_a_row = 0

    def check_loss(self, loss: torch.Tensor, step: int) -> None:
        """Stop if any process's loss is NaN or infinite (all processes stop together)."""
        bad = torch.tensor([0.0 if bool(torch.isfinite(loss.detach()).all()) else 1.0], device=self.acc.device)
        if self.acc.reduce(bad, reduction="sum").item() > 0:
            self.stop(step, f"the loss is {float(loss.detach().float().mean())}")

    def clip_and_check_gradients(self, step: int) -> None:
        """Clip (``--max-grad-norm``; 0 only measures) and stop on a non-finite gradient norm,
        unless a gradient scaler is about to skip the step for it."""
        limit = self.settings.max_grad_norm if self.settings.max_grad_norm > 0 else float("inf")
        norm = self.acc.clip_grad_norm_(self.params, limit)
        if norm is None or self.scaled:  # DeepSpeed clips inside its engine and returns nothing
            return
        if not bool(torch.isfinite(torch.as_tensor(norm)).all()):
            self.stop(step, f"the gradient norm is {float(norm)}")

    def count_skipped(self, optimizer, step: int) -> None:
        """After an optimizer step: count the scaler's skipped steps, stopping after too many in a row."""
        if not (self.scaled and getattr(optimizer, "step_was_skipped", False)):
            self.skipped_in_a_row = 0
            return
        self.skipped_total += 1
        self.skipped_in_a_row += 1
        self.acc.print(f"step {step}: fp16 gradient overflow, the scaler skipped this update")
        if self.skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
            self.stop(step, f"the fp16 gradient scaler skipped {self.skipped_in_a_row} updates in a row")

    def check_weights(self, model: torch.nn.Module, step: int) -> None:
        bad = non_finite(model.state_dict().items())
        if bad:
            self.stop(step, f"the weights hold non-finite values ({bad[0]})")

    def stop(self, step: int, what: str) -> None:
        from altdiffusion.training.loop import checkpoints

        found = checkpoints(self.settings.output_dir)
        kept = (
            f"the last good checkpoint is {found[-1]} (continue from it with --resume and a lower --lr)"
            if found
            else "no checkpoint had been written yet"
        )
        causes = [f"a learning rate too high (--lr {self.settings.lr:g}; try 10x lower)"]
        if self.settings.mixed_precision == "fp16":
            causes.append("fp16 overflow (try --mixed-precision bf16 or no)")
        causes.append("bad data (an extreme or corrupt sample)")
        raise TrainingDivergedError(
            f"training diverged at step {step}: {what}. Likely causes: {'; '.join(causes)}. "
            f"Nothing was exported; {kept}."
        )
