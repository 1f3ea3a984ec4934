#!/usr/bin/env bash
# Regenerate the golden fixtures in tests/data/ with real mdx2 1.0.5 (see tests/data/README.md).
# Needs the shared refkit (runs mdx2 1.0.5 in its own venv); never needed at test time.
#   bash tests/data/make_goldens.sh          (or: make goldens)
#   REFKIT=/path/to/refkit bash tests/data/make_goldens.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -z "${REFKIT:-}" ]; then
  for candidate in "$HERE/../../../shared/refkit" /work/shared/refkit; do
    if [ -f "$candidate/setup.sh" ]; then REFKIT="$(cd "$candidate" && pwd)"; break; fi
  done
fi
if [ -z "${REFKIT:-}" ] || [ ! -f "$REFKIT/setup.sh" ]; then
  echo "error: refkit not found; set REFKIT=/path/to/shared/refkit" >&2
  exit 1
fi
# shellcheck source=/dev/null
source "$REFKIT/setup.sh"    # puts mdx2 1.0.5 (refkit venv) first on PATH, stubs on PYTHONPATH
python "$HERE/make_goldens.py" --refkit "$REFKIT" "$@"
# scales.nxs models (mdx2.scale --mca2020) and mdx2's interp values at random points
python "$HERE/scales/make_scales_goldens.py" "$REFKIT"
# mdx2.merge outputs (tests/test_merge.py)
bash "$HERE/make_merge_goldens.sh"
python "$HERE/../mdx2_map_cases.py" goldens --refkit "$REFKIT"   # tests/data/map (diffuse map)
# find-peaks / mask-peaks outputs (mdx2.find_peaks, mdx2.mask_peaks) on cubic and mono
python "$HERE/make_peaks_goldens.py"
python "$HERE/make_reintegrate_goldens.py"   # tests/data/reintegrate/ (mdx2.scale + mdx2.reintegrate)
# the tiny Eiger-style master file of the CLI registry (raw-images kind): 2 frames of cubic, 1 per data file
rm -rf "$HERE/rawinput"
python "$HERE/../../scripts/nxs_to_eiger.py" "$HERE/cubic/data.nxs" "$HERE/rawinput" --frames 2 --frames-per-file 1 --name tiny
bash "$HERE/scale/make_scale_goldens.sh"
