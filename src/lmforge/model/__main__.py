"""``python -m lmforge.model``: list the model presets with the parameter counts of the models as built.

Counted on the meta device (nothing is allocated), beside the spec table's figures and the difference.
"""

from __future__ import annotations

import argparse
import json

from lmforge.errors import run_cli
from lmforge.model.build import describe_presets


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lmforge.model",
        description="List the model presets with the parameter counts of the models actually built "
        "(counted on the meta device, nothing allocated), beside the spec figures and the difference.",
    )
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    args = parser.parse_args(argv)
    rows = describe_presets()
    if args.json:
        print(json.dumps(rows, indent=2))  # noqa: T201 - this is the command's output
        return
    header = (f"{'preset':<16}{'family':<7}{'embedding':>15}{'spec':>15}{'diff':>14}{'non-embedding':>16}"
              f"{'spec':>15}{'diff':>15}")
    lines = [header, "-" * len(header)]

    def fmt(v: int | None) -> str:
        return "-" if v is None else f"{v:,}"

    for r in rows:
        lines.append(
            f"{r['preset']:<16}{r['family']:<7}{fmt(r['embedding_params']):>15}{fmt(r['spec_embedding']):>15}"
            f"{fmt(r['diff_embedding']):>14}{fmt(r['non_embedding_params']):>16}"
            f"{fmt(r['spec_non_embedding']):>15}{fmt(r['diff_non_embedding']):>15}"
        )
    print("\n".join(lines))  # noqa: T201 - this is the command's output


if __name__ == "__main__":
    run_cli(main, "lmforge.model")
