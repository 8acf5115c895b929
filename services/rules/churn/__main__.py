"""``python -m services.rules.churn fit --summary FILE.csv``: fit BG/NBD to customer summaries.

The CSV has columns ``frequency,recency,T`` (repeat purchases, time of the last purchase and
time since the first, in any consistent unit), one row per customer. Prints the fitted
``r, alpha, a, b`` and the log-likelihood as JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from services.rules.churn.bgnbd import Array, fit


def read_summary(path: Path) -> tuple[Array, Array, Array]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"frequency", "recency", "T"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        rows = [(float(r["frequency"]), float(r["recency"]), float(r["T"])) for r in reader]
    data = np.array(rows, dtype=np.float64).reshape(-1, 3)
    return data[:, 0], data[:, 1], data[:, 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.rules.churn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fitting = sub.add_parser("fit", help="fit the model to a summary CSV")
    fitting.add_argument("--summary", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        x, t_x, t = read_summary(args.summary)
        result = fit(x, t_x, t)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    out = {
        **result.params.as_dict(),
        "log_likelihood": result.log_likelihood,
        "customers": result.customers,
        "converged": result.converged,
    }
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
