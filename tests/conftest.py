"""Shared test set-up: thread limits for a 2-core machine and the atlas reference directory."""

import os
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "2")

# Tests use the real reference data beside the project (never committed into it).
_SHARED_REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
if "CRBM_ATLAS_DIR" not in os.environ and _SHARED_REFERENCE.is_dir():
    os.environ["CRBM_ATLAS_DIR"] = str(_SHARED_REFERENCE)

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def atlas_reference() -> Path:
    """The atlas reference directory; tests needing it fail loudly in CI if it is absent."""
    path = Path(os.environ.get("CRBM_ATLAS_DIR", _SHARED_REFERENCE))
    if not (path / "atlas_data" / "connectivity_matrix.csv").exists():
        if os.environ.get("CI"):
            pytest.fail(f"atlas reference files missing in CI ({path})")
        pytest.skip(f"atlas reference files not installed at {path}")
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
