#!/bin/sh
# Lines of code per target (blank and comment-only lines excluded), then every function longer than the
# budget (LONG_FUNCTION lines, braces counted; string literals with braces can throw the count off).
LONG_FUNCTION=${LONG_FUNCTION:-60}
cd "$(dirname "$0")/.." || exit 1
total=0
printf '%-18s %6s %6s\n' target files lines
for dir in Sources/* Tests/*; do
  [ -d "$dir" ] || continue
  files=$(find "$dir" -name '*.swift' | wc -l)
  [ "$files" -gt 0 ] || continue
  lines=$(find "$dir" -name '*.swift' -exec cat {} + | grep -v '^[[:space:]]*$' | grep -v '^[[:space:]]*//' | wc -l)
  total=$((total + lines))
  printf '%-18s %6d %6d\n' "$(basename "$dir")" "$files" "$lines"
done
printf '%-18s %6s %6d\n' total '' "$total"
echo
echo "functions over $LONG_FUNCTION lines:"
find Sources -name '*.swift' | sort | xargs awk -v budget="$LONG_FUNCTION" '
  FNR == 1 { depth = 0; n = 0 }
  {
    line = $0
    sub(/\/\/.*/, "", line)
    if (line ~ /(^|[[:space:]])(func|init)[[:space:](<]/ && line ~ /\{/) {
      match(line, /(func [A-Za-z_][A-Za-z0-9_]*|init)/)
      n++; name[n] = substr(line, RSTART, RLENGTH); start[n] = FNR; level[n] = depth
    }
    opens = gsub(/\{/, "{", line); closes = gsub(/\}/, "}", line)
    depth += opens - closes
    while (n > 0 && depth <= level[n]) {
      len = FNR - start[n] + 1
      if (len > budget) printf "  %4d  %s:%d %s\n", len, FILENAME, start[n], name[n]
      n--
    }
  }' | sort -rn
