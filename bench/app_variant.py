"""`python app.py` with the fixes of bench/proposed.py applied (prototype, for `--variant`).

Run as `python -m bench.app_variant proposed` from the project root; only the page benchmark
uses it, to show what a user would feel with the proposed fixes.
"""

from __future__ import annotations

import sys

import app
from bench.proposed import make_service


def main() -> None:
    variant = sys.argv[1] if len(sys.argv) > 1 else "proposed"
    # build_app looks GenerationService up in app's namespace when it runs.
    app.GenerationService = lambda settings, library: make_service(settings, library, variant)
    app.main()


if __name__ == "__main__":
    main()
