"""One root exception type; the CLI turns any HwnasError into a one-line message and exit 2."""


class HwnasError(Exception):
    """Root of every error hwnas raises on purpose (bad input, missing data, unusable device)."""


class SpaceError(HwnasError):
    """Unknown search space, or a space asked for at a shape it cannot take."""


class ArchError(HwnasError):
    """An architecture file is malformed or does not match its search space."""


class LutError(HwnasError):
    """A latency table is malformed, incomplete, or incompatible with the request."""


class BackendError(HwnasError):
    """A profiling or inference backend is unknown or unavailable on this machine."""


class ProfileError(HwnasError):
    """A profiling request is malformed: bad batch, threads or statistics settings, unusable output."""


class DataError(HwnasError):
    """A dataset directory is missing or malformed."""


class MissingDependencyError(HwnasError):
    """An optional package (TensorRT, pynvml, ...) is needed but not installed."""


class ExportError(HwnasError):
    """An export failed: the exporter, the ONNX checker, a parity check or an engine build."""
