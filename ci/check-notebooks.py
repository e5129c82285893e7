"""Fails when a committed notebook holds outputs or execution counts: notebooks are committed
stripped (the test suite runs them; see tests/test_notebook.py). Standard library only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def dirty_cells(path: Path) -> list[int]:
    """The indices of the code cells of notebook `path` that hold outputs or a count."""
    nb = json.loads(path.read_text())
    return [
        i for i, cell in enumerate(nb.get("cells", []))
        if cell.get("cell_type") == "code"
        and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    listed = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=root, capture_output=True,
                            text=True, check=True).stdout.split()
    status = 0
    for name in listed:
        cells = dirty_cells(root / name)
        if cells:
            print(f"{name}: cells {cells} hold outputs; strip them (jupyter nbconvert "
                  "--clear-output --inplace)", file=sys.stderr)
            status = 1
    if status == 0:
        print(f"notebooks: {len(listed)} committed without outputs")
    return status


if __name__ == "__main__":
    sys.exit(main())
