"""The grounding losses as the module docstring of altdiffusion.training.grounding writes them, one
region and one cell at a time: the reference the batched implementation is checked (and timed) against."""

import torch


def cell_cover(box, side: int, resolution: int) -> torch.Tensor:
    """(side*side,): the area of each grid cell the box covers, over the largest such area."""
    left, top, right, bottom = box
    size = resolution / side
    cover = torch.zeros(side, side)
    for row in range(side):
        for col in range(side):
            across = min((col + 1) * size, right) - max(col * size, left)
            down = min((row + 1) * size, bottom) - max(row * size, top)
            cover[row, col] = max(across, 0.0) * max(down, 0.0)
    return (cover / cover.max()).flatten()


def per_region_losses(maps, grounded, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    token, pixel, count, masks = 0.0, 0.0, 0, {}
    for probabilities in maps:
        side = int(probabilities.shape[1] ** 0.5)
        for sample, item in zip(probabilities, grounded):
            for positions, box in zip(item.tokens, item.boxes) if item is not None else ():
                if (side, box) not in masks:  # once per resolution, as the layers share them
                    masks[side, box] = cell_cover(box, side, resolution).to(sample)
                mask = masks[side, box]
                held = sample[:, positions].sum(-1).float()
                token = token + (1 - (mask * held).sum() / held.sum()) ** 2
                pixel = pixel - (mask * held.clamp_min(1e-6).log()).sum() / mask.sum()
                count += 1
    return token / count, pixel / count
