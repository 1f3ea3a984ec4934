#!/usr/bin/env bash
# Regenerate tests/data/scale/ with mdx2 1.0.5 (run by tests/data/make_goldens.sh, refkit on PATH).
# mdx2.scale on the committed mono corrected table (I 2y; 12 frames of 0.1 degrees), the default model
# and --mca2020 with grids small enough for 1.2 degrees of phi and a fast test (MCA_OPTIONS below, the
# same options tests/test_scale.py passes to diffuse scale); then the --prescale.* variants.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TABLE="$HERE/../mono/mdx2/corrected_222_bkg.nxs"
MCA_OPTIONS=(--mca2020 --offset.dphi 0.5 --absorption.dphi 0.5 --absorption.nx 6 --absorption.ny 6
             --detector.nx 30 --detector.ny 30)
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
cp "$TABLE" "$TMP/corrected.nxs"
(cd "$TMP" && mdx2.scale corrected.nxs --outfile scales_default.nxs > /dev/null 2>&1)
(cd "$TMP" && mdx2.scale corrected.nxs "${MCA_OPTIONS[@]}" --outfile scales_mca2020.nxs > /dev/null 2>&1)
# --prescale.*: isotropic (default) and by reflection on every 3rd row; --mca2020 with the offset prescaled
(cd "$TMP" && mdx2.scale corrected.nxs --prescale.enable True --outfile scales_prescale_iso.nxs > /dev/null 2>&1)
(cd "$TMP" && mdx2.scale corrected.nxs --prescale.enable True --prescale.isotropic False \
    --prescale.subsample 3 --outfile scales_prescale_hkl.nxs > /dev/null 2>&1)
(cd "$TMP" && mdx2.scale corrected.nxs "${MCA_OPTIONS[@]}" --prescale.enable True --prescale.offset True \
    --outfile scales_prescale_mca2020.nxs > /dev/null 2>&1)
# two batches: the mono table's first and second halves, 300 rows shared (tests/test_scale.py makes the
# same halves with _split_table)
python - "$TMP/corrected.nxs" "$TMP" <<'PY'
import shutil, sys
import h5py
src, out = sys.argv[1], sys.argv[2]
with h5py.File(src) as f:
    n = f["entry/hkl_table/h"].shape[0]
for name, sl in (("corr_a.nxs", slice(0, n // 2 + 300)), ("corr_b.nxs", slice(n // 2 - 300, n))):
    shutil.copyfile(src, f"{out}/{name}")
    with h5py.File(f"{out}/{name}", "r+") as f:
        g = f["entry/hkl_table"]
        for k in list(g):
            if isinstance(g[k], h5py.Dataset) and g[k].shape[:1] == (n,):
                data, attrs = g[k][()][sl], dict(g[k].attrs)
                del g[k]
                g.create_dataset(k, data=data).attrs.update(attrs)
PY
(cd "$TMP" && mdx2.scale corr_a.nxs corr_b.nxs --outfile scales_two_a.nxs scales_two_b.nxs > /dev/null 2>&1)
cp "$TMP"/scales_*.nxs "$HERE/"
