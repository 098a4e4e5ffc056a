"""Benchmark evaluation in the community's formats: zero-shot classification, retrieval, text-to-image.

import altdiffusion.eval as ev
ev.zeroshot("BAAI/AltCLIP", "wds_imagenet1k/", language="zh")        # EvalResult: acc1, acc5, ...
ev.retrieval("BAAI/AltCLIP", "flickr30k-cn.jsonl")                   # [EvalResult per language]
ev.t2i("BAAI/AltDiffusion-m18", "mg18.jsonl", out="runs/mg18", reference="coco-val/")
ev.write_results(results, "results/")                                # clip_benchmark JSON + results.md
"""

from altdiffusion.eval.results import EvalResult, markdown, write_results
from altdiffusion.eval.retrieval import retrieval
from altdiffusion.eval.t2i import t2i
from altdiffusion.eval.zeroshot import zeroshot

__all__ = ["EvalResult", "markdown", "retrieval", "t2i", "write_results", "zeroshot"]
