"""``python -m flac2all``."""

import sys

from flac2all.face.cli import main

if __name__ == "__main__":
    sys.exit(main())
