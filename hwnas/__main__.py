"""`python -m hwnas ...`, which torchrun needs: `torchrun --nproc-per-node N -m hwnas search ...`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
