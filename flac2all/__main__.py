"""``python -m flac2all``."""

import sys

from flac2all.cli import main

if __name__ == "__main__":
    sys.exit(main())
