"""``altdiffusion data ...``: preparing training data."""

from __future__ import annotations

import argparse


def add_data_parsers(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="data tools").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("shards", help="TSV/CSV/JSONL of (image, caption[, language]) -> webdataset shards")
    p.add_argument("table", help="file with columns image, caption[, language] (header row for TSV/CSV)")
    p.add_argument("--out", required=True, help="folder for 00000.tar, 00001.tar, ...")
    p.add_argument("--shard-size", type=int, default=10000)
    p.add_argument("--image-root", default=None, help="relative image paths start here (default: the table's folder)")
    p.set_defaults(func=cmd_data_shards)


def cmd_data_shards(args) -> int:
    from altdiffusion.training.shards import make_shards

    report = make_shards(args.table, args.out, shard_size=args.shard_size, image_root=args.image_root)
    skipped = ", ".join(f"{n} {why}" for why, n in report["skipped"].items()) or "none"
    print(f"wrote {report['written']} samples in {report['shards']} shards to {args.out}; skipped: {skipped}")
    return 0
