"""hwnas: hardware-aware mobile model design (profile, predict, search, export)."""

__version__ = "0.1.0"
