"""Puts `tests/` on the import path, so that a bench run as a script
(`.venv/bin/python benches/relay.py`) uses the test support (`tests/support/`) as the tests do:

    import support_path  # noqa: F401
    from support.net import free_port
"""

import sys
from pathlib import Path

TESTS = str(Path(__file__).resolve().parent.parent / "tests")
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)
