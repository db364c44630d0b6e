#!/usr/bin/env bash
# Fails when the profile table of tests/conformance/README.md differs from
# the profiles the suite really has (main.cc, read through the binary):
# name, whether Rust has the options, the options, the groups, the host
# checks. ctest `conformance_readme`.
#
#   check_readme.sh SUITE [README]
set -euo pipefail
suite=$1
readme=${2:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/README.md}
# The README's rows: "| name | yes|no | `options` | g1, g2 | c1, c2 |".
declare -A row=()
while IFS='|' read -r _ name rust opts groups checks _; do
  name=$(xargs <<<"$name")
  [[ -z $name || $name == profile || $name == ---* ]] && continue
  opts=$(sed 's/^ *`\{0,1\}//; s/`\{0,1\} *$//' <<<"$opts")
  row[$name]="$(xargs <<<"$rust")|$opts|$(xargs <<<"$groups")|$(xargs <<<"$checks")"
done < <(grep -E '^\| [a-z]' "$readme")
bad=0
while IFS=$'\t' read -r name who options; do
  rust=no
  [[ $who == both ]] && rust=yes
  groups=$("$suite" groups "$name" | cut -d' ' -f2 | cut -d/ -f1 | uniq | paste -sd, | sed 's/,/, /g')
  checks=$("$suite" checks "$name" | cut -d' ' -f2 | cut -d/ -f2 | paste -sd, | sed 's/,/, /g')
  want="$rust|$options|$groups|$checks"
  if [[ ${row[$name]:-missing} != "$want" ]]; then
    echo "README row for $name: '${row[$name]:-missing}', the suite has '$want'"
    bad=1
  fi
  unset "row[$name]"
done < <("$suite" profiles)
for name in "${!row[@]}"; do
  echo "README lists a profile the suite does not have: $name"
  bad=1
done
if ((bad)); then echo "CONFORMANCE README: OUT OF DATE"; exit 1; fi
echo "CONFORMANCE README: matches the suite"
