"""Scale-out: Ray for profiling fleets and parallel candidate evaluation, torchrun (DDP) for
supernet training. Nothing here imports Ray at import time: without `--ray` Ray never loads."""
