#!/usr/bin/env bash
# Cuts DAYS days from day FIRST of a ServeGen model folder into OUT, for embedding in the simulator:
# window starts shifted so that day FIRST starts at 0, numbers rounded to 6 significant digits, clients
# idle throughout dropped. Usage: hack/slice-servegen.sh SRC_DIR OUT_DIR FIRST DAYS
set -euo pipefail
src=$1 out=$2 first=$3 days=$4
rm -rf "$out" && mkdir -p "$out"
for f in "$src"/chunk-*-trace.csv; do
	awk -F, -v from=$((first * 86400)) -v end=$(((first + days) * 86400)) '
		function r(x) { return (x == int(x)) ? x : sprintf("%.6g", x) }
		$1 >= from && $1 < end { all = all ($1 - from) "," r($2) "," r($3) "," $4 "," r($5) "," r($6) "\n"; if ($2 > 0) active = 1 }
		END { if (active) printf "%s", all }' "$f" >"$out/tmp"
	if [ -s "$out/tmp" ]; then mv "$out/tmp" "$out/$(basename "$f")"; else rm "$out/tmp"; fi
done
