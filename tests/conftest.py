from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture
def shared_data() -> Path:
    """../shared/data beside the repository; tests that need it skip when it is absent."""
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} is absent (it lies beside the repository on project machines)")
    return path


@pytest.fixture(autouse=True)
def _no_network_downloads(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster of 2 CPUs for the whole session (Ray has no local_mode any more);
    tests that use it are marked `ray`. Skipped with the install hint where Ray is absent."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -r requirements-ray.txt")
    # address="local": a new instance even where `ray start` left a cluster running on this machine
    # log_to_driver=False: a worker's output would land, late, in another test's captured stderr
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()
