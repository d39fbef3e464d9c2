"""Fixtures every test area shares."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public datasets in ../shared/data (never copied into the project)."""
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip(f"needs the shared datasets at {data} (../shared beside the checkout), which is absent")
    return data


@pytest.fixture(scope="session")
def shared_reference() -> Path:
    """ProtBert's reference vocabulary and config in ../shared/reference."""
    ref = SHARED / "reference"
    if not ref.is_dir():
        pytest.skip(f"needs the shared reference files at {ref} (../shared beside the checkout), which is absent")
    return ref
