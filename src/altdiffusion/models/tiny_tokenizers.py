"""The tokenizers of the tiny random checkpoints (models/tiny.py): XLM-R's files, and a
word-level English one for a CLIP teacher.

An XLM-R folder gets a small unigram sentencepiece model trained on its text, or a given
``tokenizer.json`` (the real XLM-R one, or the mini build's pruned copy of it).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

# Enough text in the m9 languages for a tokenizer that covers every test prompt.
CORPUS = [
    "a photo of a cat",
    "a photo of a dog",
    "a red car on the street",
    "an astronaut riding a horse",
    "a painting of mountains and rivers in the style of guohua",
    "a girl in tang dynasty clothes",
    "一只可爱的猫坐在窗台上",
    "一张狗的照片",
    "一辆红色的汽车",
    "穿着唐装的女孩，国画风格，古建筑，山水",
    "汽车",
    "猫",
    "狗",
    "宇航员骑马",
    "高清，细节丰富，大师作品",
    "窓辺に座っているかわいい猫",
    "赤い車の写真",
    "犬の写真",
    "قطة لطيفة تجلس على حافة النافذة",
    "صورة كلب",
    "سيارة حمراء",
    "un gato lindo sentado en la ventana",
    "una foto de un perro",
    "un coche rojo",
    "un chat mignon assis sur le rebord de la fenêtre",
    "une photo d'un chien",
    "une voiture rouge",
    "милая кошка сидит на подоконнике",
    "фотография собаки",
    "красная машина",
    "창턱에 앉아 있는 귀여운 고양이",
    "개 사진",
    "빨간 자동차",
    "un gatto carino seduto sul davanzale",
    "una foto di un cane",
    "una macchina rossa",
    "ein Foto einer Katze",
    "แมวน่ารัก",
    "एक बिल्ली",
    "kedi fotoğrafı",
    "ảnh một con mèo",
    "0123456789 , . ! ? ( ) [ ] : ; - _ ' \" 、 ， 。",
]

XLMR_SPECIAL_TOKENS = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "sep_token": "</s>",
    "pad_token": "<pad>",
    "cls_token": "<s>",
    "mask_token": {"content": "<mask>", "lstrip": True, "normalized": True, "rstrip": False, "single_word": False},
}


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _sentencepiece_model(corpus: list[str] | None = None, vocab_size: int = 400, max_piece_length: int = 16) -> bytes:
    """A small unigram sentencepiece model trained on CORPUS (well under a second)."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter((corpus or CORPUS) * 4),
        model_writer=buf,
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        character_coverage=1.0,
        model_type="unigram",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        max_sentencepiece_length=max_piece_length,
        minloglevel=2,
        num_threads=1,
    )
    return buf.getvalue()


def write_xlmr_tokenizer(
    folder: Path,
    *,
    max_length: int,
    with_tokenizer_json: bool,
    tokenizer_json: bytes | None = None,
    corpus: list[str] | None = None,
    vocab_size: int = 400,
    max_piece_length: int = 16,
    tokenizer_class: str = "XLMRobertaTokenizer",
) -> int:
    """The slow XLM-R tokenizer files (sentencepiece.bpe.model...); returns the vocab size.

    With ``tokenizer_json``, that ``tokenizer.json`` instead, and no sentencepiece model;
    ``tokenizer_class`` is the class ``tokenizer_config.json`` names.
    """
    from transformers import AutoTokenizer

    if tokenizer_json is not None:
        name, data = "tokenizer.json", tokenizer_json
    else:
        name, data = "sentencepiece.bpe.model", _sentencepiece_model(corpus, vocab_size, max_piece_length)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "special_tokens_map.json", XLMR_SPECIAL_TOKENS)
    config = {
        "model_max_length": max_length,
        "tokenizer_class": tokenizer_class,
        **{k: v for k, v in XLMR_SPECIAL_TOKENS.items() if k != "mask_token"},
    }
    (folder / name).write_bytes(data)
    write_json(folder / "tokenizer_config.json", config)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if with_tokenizer_json and tokenizer_json is None:
        tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
    return len(tokenizer)


def write_word_level_tokenizer(folder: Path, corpus: list[str]) -> int:
    """A CLIP-style tokenizer whose vocabulary is the words of ``corpus``; returns its size."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<|startoftext|>", "<|endoftext|>", "<pad>", "<unk>"]
    words = sorted({w for line in corpus for w in line.lower().replace(",", " , ").replace(".", " . ").split()})
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    backend.normalizer = normalizers.Lowercase()
    backend.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=77,
    )
    tokenizer.save_pretrained(str(folder))
    return len(vocab)
