"""`python -m tests.stand_in_serving`: the serving process exactly as `python -m serving`, on the
stand-in engine of tests/helpers.py: for tests of the HTTP layer (feedback, no loss) that need a
real process to kill and restart but not generation. Starts in about a second."""

from __future__ import annotations

import sys

from serving.__main__ import main
from tests.helpers import stand_in_engine

if __name__ == "__main__":
    sys.exit(main(stand_in_engine()))
