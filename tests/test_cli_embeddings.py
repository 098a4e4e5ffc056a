"""``altdiffusion generate --embeddings-dir``: triggers reach the image and its infotext; a file made
for another text encoder is skipped with a warning line; a missing folder is one error line."""

import hashlib

import torch
from PIL import Image

from altdiffusion.cli import main
from altdiffusion.pipelines.infotext import parse_infotext
from altdiffusion.prompts.embedding_files import Embedding, write_embedding


def test_generate_with_an_embeddings_dir(tmp_path, capsys):
    folder = tmp_path / "embeddings"
    write_embedding(
        Embedding("glow", torch.randn(2, 128, generator=torch.Generator().manual_seed(0))), folder / "glow.pt"
    )
    write_embedding(Embedding("sd15", torch.zeros(1, 768)), folder / "sd15.safetensors")
    out = tmp_path / "out.png"
    args = ["generate", "a (glow:1.1) circle", "--steps", "1", "--seed", "4", "--out", str(out), "--no-progress"]
    assert main([*args, "--embeddings-dir", str(folder)]) == 0
    err = capsys.readouterr().err
    assert "warning: embedding 'sd15' skipped: sd15.safetensors: its vectors are 768-d" in err
    params = parse_infotext(Image.open(out).info["parameters"])[2]
    assert params["TI hashes"] == f"glow: {hashlib.sha256((folder / 'glow.pt').read_bytes()).hexdigest()[:12]}"


def test_missing_embeddings_dir_is_one_error_line(tmp_path, capsys):
    out = tmp_path / "out.png"
    code = main(["generate", "x", "--steps", "1", "--out", str(out), "--embeddings-dir", str(tmp_path / "nope")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--embeddings-dir" in err and not out.exists()
