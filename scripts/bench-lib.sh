# Shared helpers of the bench scripts (sourced, not run).
now() { local t=$EPOCHREALTIME; echo "${t/./}"; }   # unix microseconds
# secs A B: the seconds from microsecond stamp A to B, two decimals.
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 1e6 }'; }
# median X...: the median of the numbers, two decimals.
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) printf "%.2f", a[(NR + 1) / 2]; else printf "%.2f", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# spread X...: "min-max" of the numbers.
spread() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.2f-%.2f", lo, hi }'; }
