"""Results in clip_benchmark's JSON schema, one file per (dataset, model, task, language), plus Markdown.

clip_benchmark writes ``{"dataset", "model", "pretrained", "task", "metrics", "language"}`` to
``{dataset}_{pretrained}_{model}_{language}_{task}.json``; its ``build_csv`` reads such files into
tables, so ours use the same keys (and add ``skipped``: samples left out and why).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class EvalResult:
    dataset: str
    model: str
    task: str
    language: str
    metrics: dict[str, float]
    skipped: dict[str, int] = field(default_factory=dict)
    predictions: list[int] | None = None  # zero-shot top-1 class per evaluated sample (not written)

    def to_json(self) -> dict:
        record = asdict(self)
        record.pop("predictions")
        return {"pretrained": self.model, **record}

    def file_name(self) -> str:
        slug = "_".join(re.sub(r"[^\w.-]+", "-", part) for part in (self.dataset, self.model, self.language, self.task))
        return f"{slug}.json"


def _write(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def markdown(results: Sequence[EvalResult]) -> str:
    """One table per (dataset, task): a row per language, a column per metric; rates in %."""
    blocks = []
    for dataset, task in dict.fromkeys((r.dataset, r.task) for r in results):
        rows = [r for r in results if (r.dataset, r.task) == (dataset, task)]
        names = list(dict.fromkeys(name for r in rows for name in r.metrics))
        lines = [f"**{dataset}**, {task}, {rows[0].model}", "", "| language | " + " | ".join(names) + " |"]
        lines.append("|---|" + "---:|" * len(names))
        for r in rows:
            lines.append(f"| {r.language} | " + " | ".join(_cell(n, r.metrics.get(n)) for n in names) + " |")
        skipped = {k: v for r in rows for k, v in r.skipped.items()}
        if skipped:
            lines += ["", "Skipped: " + ", ".join(f"{v} {k}" for k, v in skipped.items())]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _cell(name: str, value: float | None) -> str:
    if value is None:
        return ""
    rate = "recall" in name or name.startswith("acc")
    return f"{100 * value:.2f}" if rate else f"{value:.4g}"


def write_results(results: Sequence[EvalResult], out: str | Path) -> list[Path]:
    """JSON files and ``results.md`` (appending this run's tables) in ``out``; the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for result in results:
        path = out / result.file_name()
        _write(path, json.dumps(result.to_json(), ensure_ascii=False, indent=1) + "\n")
        paths.append(path)
    table = out / "results.md"
    before = table.read_text(encoding="utf-8") + "\n" if table.is_file() else ""
    _write(table, before + markdown(results))
    return [*paths, table]
