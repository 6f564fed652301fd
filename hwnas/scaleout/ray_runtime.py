"""Connecting to Ray: the one place hwnas imports it (lazily), with the install hint when it is
missing, and the meaning of `--ray [ADDRESS]`."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from ..errors import MissingDependencyError

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
    if target is None and not os.environ.get("RAY_ADDRESS"):
        init_kwargs.setdefault("include_dashboard", False)
    from ray.exceptions import AuthenticationError

    try:
        ray.init(address=target, logging_level="WARNING", log_to_driver=True, **init_kwargs)
    except (ConnectionError, AuthenticationError) as exc:
        from ..errors import HwnasError

        raise HwnasError(f"cannot reach the Ray cluster at {address}: {str(exc).splitlines()[0][:200]}; start one "
                         f"with `ray start --head` (or pass its HOST:PORT to --ray); {AUTH_HINT}") from None
    try:
        yield ray
    finally:
        ray.shutdown()
