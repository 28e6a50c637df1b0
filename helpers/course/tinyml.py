"""``python -m helpers.course.tinyml MODEL.tflite [--out DIR] [--board NAME]``: prepare a
``.tflite`` model for a microcontroller (C files, flash and arena, operator check, fit table).

The command-line face of ``helpers.tinyml`` (taught in ``lessons/deeper/tinyml_deployment``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from helpers import tinyml
from helpers.measure import load_tflite

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.course.tinyml MODEL.tflite [--out DIR] [--board NAME]``.

    Writes the C files, prints flash and arena bytes, the operator check and the fit table.
    Exit codes: 0 the model can run on TFLM (and fits ``--board`` if given), 1 it cannot
    (an operator TFLM lacks, or it does not fit the board), 2 bad input.
    """
    parser = argparse.ArgumentParser(prog="python -m helpers.course.tinyml",
                                     description="Prepare a .tflite model for a microcontroller.")
    parser.add_argument("model", type=Path, help="the .tflite file")
    parser.add_argument("--out", type=Path, default=Path("."),
                        help="directory for model_data.h / model_data.cc (default: .)")
    parser.add_argument("--board", default=None, help="show the verdict for this board only")
    parser.add_argument("--name", default="model_data", help="C array name and file stem")
    args = parser.parse_args(argv)
    try:
        flatbuffer = load_tflite(args.model)
        ops = tinyml.check_ops(flatbuffer)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"model:  {args.model} ({len(flatbuffer):,} bytes of flash)")
    print("operators (tflm = the installed TFLM has a kernel):")
    print(ops.to_string())
    missing = list(ops.index[~ops["tflm"]])
    if missing:
        print(f"error: TensorFlow Lite Micro has no kernel for {', '.join(missing)}",
              file=sys.stderr)
        return 1
    try:
        arena = tinyml.arena_size(flatbuffer)
        header, source = tinyml.export_c(flatbuffer, args.out, args.name, arena_bytes=arena)
        table = tinyml.fit_table(len(flatbuffer), arena)
        board = tinyml.find_board(table, args.board) if args.board else None
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"flash:  {len(flatbuffer):,} bytes (model)")
    print(f"arena:  {arena:,} bytes (minimum TFLM tensor arena, SRAM)")
    print(f"wrote:  {header} and {source}")
    print(f"allowances: {tinyml.FLASH_ALLOWANCE_KB:g} KB flash and "
          f"{tinyml.SRAM_ALLOWANCE_KB:g} KB SRAM for the runtime and the application")
    shown = table.loc[[board]] if board else table
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(shown.drop(columns=["core"]).to_string())
    return 0 if board is None or bool(table.loc[board, "fits"]) else 1


if __name__ == "__main__":
    sys.exit(main())
