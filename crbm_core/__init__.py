"""crbm_core: the science of crbm-explorer (compositional RBMs on whole-brain recordings).

No UI imports live here; `app` depends on this package, never the reverse.
"""

import os as _os

# numba's workqueue layer does not spin-wait: its threads never fight BLAS or another process
# for the 2 cores (the OpenMP layer made kernels 2–3× slower under load; see README).
_os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")

__version__ = "0.1.0"
