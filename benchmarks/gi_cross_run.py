"""Table VIII of ResKD (Li et al.) from finished runs: GI/C1 to T (eq. 21) of every student of
several ResKD runs, averaged over the same test samples for every row, those S0 gets wrong and any
ResKD student of the runs gets right.

    python -m benchmarks.gi_cross_run RUN_DIR [RUN_DIR ...]

Each RUN_DIR is a ``reskd run`` output directory (its ``test_outputs.npz``). The runs must share
the test set, the teacher and S0, as the table's rows do: run them with one stages directory
(``--stages-dir``, or the service's), so that T and S0 are trained once and reused. Prints each
student (one row for a student that two runs share) with its test accuracy, its mean L2 distance
to T over the whole test set and its GI/C1 to T over the cross-run samples.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from distill.gap_info import OUTPUTS_FILE, GITable, SampleOutputs, cross_run_gi
from distill.report import format_table
from space.numbers import percent


def table_text(table: GITable) -> str:
    """The rows as a person reads them, and which samples GI/C1 averages over."""
    rows = [
        {
            "run": r.run,
            "model": r.model,
            "arch": r.arch,
            "test acc": percent(r.accuracy),
            "L2 to T": f"{r.l2_to_T:.4f}",
            "GI/C1 to T": "-" if r.gi_over_c1_to_T is None else f"{r.gi_over_c1_to_T:.4f}",
        }
        for r in table.rows
    ]
    note = (
        f"GI/C1 to T: mean ||S - T||_2 of logits over the {table.samples} test samples S0 gets "
        "wrong and some ResKD student of these runs gets right; L2 to T: over all test samples"
    )
    return format_table(rows, list(rows[0])) + "\n" + note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.runs if not (d / OUTPUTS_FILE).is_file()]
    if missing:
        parser.exit(2, f"gi_cross_run: no {OUTPUTS_FILE} (a finished ResKD run's) in {missing}\n")
    try:
        table = cross_run_gi({str(d): SampleOutputs.load(d) for d in args.runs})
    except ValueError as exc:
        parser.exit(2, f"gi_cross_run: {exc}\n")
    print(table_text(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
