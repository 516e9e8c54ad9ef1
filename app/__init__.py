"""crbm-explorer dashboard (Panel). Depends on crbm_core, never the reverse."""
