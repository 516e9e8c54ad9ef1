"""Regenerate crbm_core/tables/region_geometry.{csv,json} from the atlas reference files.

Usage: CRBM_ATLAS_DIR=../shared/reference python scripts/build_atlas_tables.py
(needs the label volume and the 11 real fish label files: `crbm atlas fetch --with-fish-labels`).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from crbm_core import atlas  # noqa: E402

if __name__ == "__main__":
    print(f"reading reference files from {atlas.atlas_dir()}")
    print(f"wrote {atlas.write_region_geometry_table()}")
