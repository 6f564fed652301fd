"""Connecting to Ray: the one place hwnas imports it (lazily), with the install hint when it is
missing, and the meaning of `--ray [ADDRESS]`."""

from __future__ import annotations

import contextlib
import math
import os
from typing import Iterator

from ..errors import HwnasError, MissingDependencyError

INSTALL_HINT = "pip install -r requirements-ray.txt (or pip install 'hwnas[ray]')"
#: Ray >= 2.59 turns token authentication on for clusters it starts with a token at hand; a joining
#: node or a driver given an explicit address must then send that token
AUTH_HINT = ("if the cluster uses token authentication, set RAY_AUTH_MODE=token here and give its token "
             "(RAY_AUTH_TOKEN=..., or copy ~/.ray/auth_token from the head; `ray get-auth-token` there prints it)")
#: what a bare `--ray` means: RAY_ADDRESS when set, else the cluster `ray start` started on this
#: machine, else a new local instance (Ray's own order for `ray.init()`)
LOCAL = "local"


def import_ray():
    """The `ray` module, or a MissingDependencyError that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError(f"--ray needs Ray, which is not installed ({exc}); {INSTALL_HINT}, "
                                     "or drop --ray to run on this machine alone") from None
    return ray


@contextlib.contextmanager
def connected(address: str | None = LOCAL, **init_kwargs) -> Iterator[object]:
    """Ray, initialised for the duration of the block.

    `address`: `local` (a bare `--ray`): RAY_ADDRESS if set, else the cluster `ray start` started
    on this machine, else a new Ray instance here; `auto`: the cluster `ray start` started on this
    machine; `HOST:PORT` or `ray://HOST:PORT`: an existing cluster. If Ray is already initialised in this process (a
    test's session cluster) it is used as is and left running; otherwise it is shut down after.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    target = None if address in (None, LOCAL) else address
    if target is not None:
        probe_head(target)
    if target is None and not os.environ.get("RAY_ADDRESS"):
        init_kwargs.setdefault("include_dashboard", False)
    from ray.exceptions import AuthenticationError

    try:
        ray.init(address=target, logging_level="WARNING", log_to_driver=True, **init_kwargs)
    except (ConnectionError, AuthenticationError) as exc:
        raise HwnasError(f"cannot reach the Ray cluster at {address}: {str(exc).splitlines()[0][:200]}; start one "
                         f"with `ray start --head` (or pass its HOST:PORT to --ray); {AUTH_HINT}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def probe_head(address: str, timeout_s: float = 5.0) -> None:
    """A `HOST:PORT` head that nothing answers on is one line at once (ray.init would retry for
    minutes); `auto`, `ray://` and other forms are left to Ray."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or "://" in address:
        return
    import socket

    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise HwnasError(f"no Ray cluster answers at {address} ({exc.strerror or type(exc).__name__}); start one there "
                         "with `ray start --head --port PORT` (README 'Scale-out'), or drop the address to run a "
                         "local Ray instance") from None


def fits(resources: dict, cpus: float, gpus: float = 0.0, resource: str | None = None) -> int:
    """How many units of `cpus` CPUs, `gpus` GPUs and one `resource` a node with these (total)
    resources holds at once (a task or an actor never spans nodes)."""
    counts = [math.floor(resources.get(name, 0.0) / need + 1e-9)
              for name, need in (("CPU", cpus), ("GPU", gpus), (resource, 1.0)) if name and need > 0]
    return min(counts) if counts else 0


def cluster_slots(ray, cpus: float, gpus: float = 0.0, resource: str | None = None) -> int:
    """How many such units the cluster's live nodes hold at once, node by node."""
    return sum(fits(node.get("Resources", {}), cpus, gpus, resource) for node in ray.nodes() if node.get("Alive"))


def raise_hwnas_cause(exc: BaseException) -> None:
    """Re-raise the HwnasError a Ray task or actor call raised (a bad set-up, with its own one-line
    message) instead of Ray's wrapper; any other error returns to the caller."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, HwnasError):
        raise cause from None
