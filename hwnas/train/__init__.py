"""Training: the image data (`data`), the training loop (`loop`) and its distributed form across
torchrun processes (`ddp`). Below search, transfer and scale-out, which train networks; above the
model core (architectures, spaces, the builder), which they train."""
