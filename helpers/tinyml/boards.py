"""Which boards a model fits: flash and SRAM needs against ``helpers.data.edge_boards()``,
after stated allowances for the runtime and the application."""
from __future__ import annotations

import re

import pandas as pd

from helpers import _validate
from helpers.data import edge_boards

__all__ = ["FLASH_ALLOWANCE_KB", "SRAM_ALLOWANCE_KB", "fit_table", "find_board"]

# Stated allowances (assumptions, not measurements): what the program needs next to the model.
# Flash: the TFLM core runtime "fits in 16 KB on an Arm Cortex M3" and with the kernels of the
# micro_speech model about 22 KB (tensorflow.org/lite/microcontrollers overview); real builds are
# larger (tensorflow/tflite-micro issue #3069), so we add room for more kernels, start-up code,
# drivers and the application itself.
FLASH_ALLOWANCE_KB = 64.0
# SRAM: stack, the interpreter and op-resolver objects, input/output buffers, drivers, app state.
SRAM_ALLOWANCE_KB = 16.0
# TFLM needs a 32-bit CPU ("TensorFlow Lite for Microcontrollers ... requires a 32-bit
# platform", tensorflow.org/lite/microcontrollers); the core column of edge_boards() says which.
_NOT_32_BIT = re.compile(r"\b(8|16)-bit\b", re.IGNORECASE)


def fit_table(flash_bytes: int, arena_bytes: int, boards: pd.DataFrame | None = None,
              flash_allowance_kb: float = FLASH_ALLOWANCE_KB,
              sram_allowance_kb: float = SRAM_ALLOWANCE_KB) -> pd.DataFrame:
    """Which boards a model fits, and by what margin.

    A board fits when (1) its CPU is 32-bit (TFLM's requirement), (2) model bytes plus the
    flash allowance fit in its flash, and (3) the tensor arena plus the SRAM allowance fit in
    its SRAM. The allowances are stated assumptions (see ``FLASH_ALLOWANCE_KB`` and
    ``SRAM_ALLOWANCE_KB``), so change them to match your application.

    Args:
        flash_bytes: The model's flatbuffer size in bytes.
        arena_bytes: Its tensor arena in bytes (:func:`arena_size`).
        boards: Board table with columns ``board, core, flash_kb, sram_kb``; default
            :func:`helpers.data.edge_boards`.
        flash_allowance_kb: Flash kept for the runtime and the application, KB.
        sram_allowance_kb: SRAM kept for the stack, runtime objects and the application, KB.

    Returns:
        One row per board: ``flash need KB``, ``flash margin KB``, ``SRAM need KB``,
        ``SRAM margin KB`` (negative: short by that much), ``fits`` and ``why not``.
    """
    flash_bytes = _validate.integer(flash_bytes, "flash_bytes", 0)
    arena_bytes = _validate.integer(arena_bytes, "arena_bytes", 0)
    flash_allowance_kb = _validate.number(flash_allowance_kb, "flash_allowance_kb", 0)
    sram_allowance_kb = _validate.number(sram_allowance_kb, "sram_allowance_kb", 0)
    boards = edge_boards() if boards is None else boards
    missing = {"board", "core", "flash_kb", "sram_kb"} - set(boards.columns)
    if missing:
        raise ValueError(f"boards must have columns board, core, flash_kb, sram_kb; "
                         f"missing {sorted(missing)}")
    flash_need = flash_bytes / 1024 + flash_allowance_kb
    sram_need = arena_bytes / 1024 + sram_allowance_kb
    rows = []
    for _, board in boards.iterrows():
        flash_margin, sram_margin = board.flash_kb - flash_need, board.sram_kb - sram_need
        reasons = []
        if _NOT_32_BIT.search(str(board.core)):
            reasons.append("TFLM needs a 32-bit CPU")
        if flash_margin < 0:
            reasons.append(f"flash short by {-flash_margin:,.1f} KB")
        if sram_margin < 0:
            reasons.append(f"SRAM short by {-sram_margin:,.1f} KB")
        rows.append({"board": board.board, "core": board.core, "flash KB": board.flash_kb,
                     "flash need KB": round(flash_need, 1),
                     "flash margin KB": round(flash_margin, 1), "SRAM KB": board.sram_kb,
                     "SRAM need KB": round(sram_need, 1), "SRAM margin KB": round(sram_margin, 1),
                     "fits": not reasons, "why not": "; ".join(reasons)})
    return pd.DataFrame(rows).set_index("board")


def find_board(table: pd.DataFrame, name: str) -> str:
    matches = [board for board in table.index if name.lower() in board.lower()]
    if len(matches) != 1:
        raise ValueError(f"board must name one of {list(table.index)}, got {name!r} "
                         f"({len(matches)} matches)")
    return matches[0]
