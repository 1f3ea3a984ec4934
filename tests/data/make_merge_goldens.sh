#!/usr/bin/env bash
# mdx2 1.0.5 goldens of `diffuse merge` (tests/test_merge.py), from the cubic corrected tables.
# Called by make_goldens.sh after make_goldens.py (refkit already on PATH); standalone:
#   source ../shared/refkit/setup.sh && bash tests/data/make_merge_goldens.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="$HERE/merge"
C325="$HERE/cubic/mdx2/corrected_325_bkg.nxs"
C111="$HERE/cubic/mdx2/corrected_111_p1.nxs"
GEOM="$HERE/cubic/geometry.nxs"
mkdir -p "$OUT"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
cd "$TMP"
# mdx2.merge with numpy's global stream seeded first (mdx2 itself never seeds it)
cat > seeded.py <<'PY'
import sys
import numpy as np
seed = int(sys.argv[1])
sys.argv = ["mdx2.merge"] + sys.argv[2:]
np.random.seed(seed)
from mdx2.command_line.merge import run
run()
PY
NO="--no-scaling --no-offset --no-absorption --no-detector"
# all four models (mdx2.scale --mca2020) on the 3 2 5 table; the scaling model alone on the 1 1 1 table
mdx2.scale "$C325" --mca2020 --absorption.dphi 0.5 --detector.nx 20 --detector.ny 20 --outfile scales_325.nxs > /dev/null 2>&1
mdx2.scale "$C111" --outfile scales_111.nxs > /dev/null 2>&1
cp scales_325.nxs scales_111.nxs "$OUT/"
m() { python seeded.py "$@" > /dev/null 2>&1; }
m 0 "$C325" --scale scales_325.nxs $NO --outfile "$OUT/merged_325_noscale.nxs"
m 0 "$C325" --scale scales_325.nxs --outfile "$OUT/merged_325_scales.nxs"
m 0 "$C325" --scale scales_325.nxs --no-absorption --no-offset --outlier 2 --outfile "$OUT/merged_325_bd_o2.nxs"
m 0 "$C111" "$C111" --scale scales_111.nxs scales_111.nxs --outfile "$OUT/merged_111x2_scales.nxs"
m 5 "$C111" --scale scales_111.nxs --outlier 3 --split weightedRandomHalf --outfile "$OUT/merged_111_wrh_seed5.nxs"
m 11 "$C111" "$C111" --scale scales_111.nxs scales_111.nxs --split randomHalf --outfile "$OUT/merged_111x2_rh_seed11.nxs"
m 0 "$C111" --scale scales_111.nxs $NO --split Friedel --geometry "$GEOM" --outfile "$OUT/merged_111_friedel.nxs"
du -sh "$OUT"
