"""crbm_core: the science of crbm-explorer (compositional RBMs on whole-brain recordings).

No UI imports live here; `app` depends on this package, never the reverse.
"""

import os as _os

import numba as _numba

# numba's workqueue layer does not spin-wait: its threads never fight BLAS or another process
# for the cores (the OpenMP layer made kernels 2–3× slower under load; see README). Set through
# numba.config so it also holds when numba was imported first; NUMBA_THREADING_LAYER overrides.
if "NUMBA_THREADING_LAYER" not in _os.environ:
    _numba.config.THREADING_LAYER = "workqueue"

__version__ = "0.1.0"
