"""What the libraries underneath print on a terminal: their log chatter off, download progress on.

Legacy-config notices and load reports from diffusers and transformers are noise at the CLI
and in ``serve``'s log. Hub downloads are not: the first ``--model BAAI/AltDiffusion-m9`` run
fetches gigabytes, and a silent terminal looks hung. transformers' ``disable_progress_bar()``
also turns huggingface_hub's download bars off, so they are turned back on after it (unless
the user set ``HF_HUB_DISABLE_PROGRESS_BARS=1``, which wins).
"""

from __future__ import annotations

import logging
import os


def quiet_libraries() -> None:
    """Library log messages and load bars off; huggingface_hub's download bars on."""
    # transformers imports torchao (installed for --int8) when it loads: its notices about CUDA
    # extensions and deprecated pytree registrations say nothing a user of this CLI can act on.
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import diffusers
    import transformers
    from huggingface_hub.utils import enable_progress_bars

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # its own bars, and the hub's as a side effect
    if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "").strip().upper() not in ("1", "ON", "YES", "TRUE"):
        enable_progress_bars()
