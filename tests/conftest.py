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
