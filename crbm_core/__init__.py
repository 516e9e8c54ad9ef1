"""crbm_core: the science of crbm-explorer (compositional RBMs on whole-brain recordings).

No UI imports live here; `app` depends on this package, never the reverse.
"""

__version__ = "0.1.0"
