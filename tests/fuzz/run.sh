#!/bin/sh
# Builds every tests/fuzz/*_fuzz.c target and runs each for FUZZ_SECONDS
# (default 60). The C sources a target needs besides itself are listed on a
# line "// fuzz-sources: src/a.c src/b.c" in the target. Binaries go to
# build/fuzz/, corpora to build/fuzz/NAME-corpus/ (seeded from
# tests/fuzz/NAME-seeds/ and, for mime, tests/mime-corpus/).
# Exit status: 1 when a build fails or a target finds a crash.
set -u
cd "$(dirname "$0")/../.." || exit 1
SECS=${FUZZ_SECONDS:-60}
OUT=build/fuzz
mkdir -p "$OUT"
CFLAGS="-g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Isrc"
PKGC=$(pkg-config --cflags fuse3 libetpan)
PKGL=$(pkg-config --libs libetpan openssl zlib)
status=0

for src in tests/fuzz/*_fuzz.c; do
	name=$(basename "$src" .c)
	# FUZZ_TARGETS="imap pop3": only those targets
	if [ -n "${FUZZ_TARGETS:-}" ] &&
	    ! printf ' %s ' "$FUZZ_TARGETS" | grep -q " ${name%_fuzz} "; then
		continue
	fi
	sources=$(sed -n 's|^// fuzz-sources:||p' "$src" | head -n 1)
	if [ -z "$sources" ]; then
		echo "$name: no '// fuzz-sources:' line, skipped" >&2
		status=1
		continue
	fi
	# shellcheck disable=SC2086
	if ! clang $CFLAGS $PKGC "$src" $sources $PKGL -o "$OUT/$name"; then
		echo "$name: build failed" >&2
		status=1
		continue
	fi
	corpus="$OUT/$name-corpus"
	mkdir -p "$corpus"
	seeds=""
	base=${name%_fuzz}
	[ -d "tests/fuzz/$base-seeds" ] && seeds="tests/fuzz/$base-seeds"
	[ "$base" = mime ] && seeds="$seeds tests/mime-corpus"
	echo "== $name: $SECS s"
	# shellcheck disable=SC2086
	if ! "$OUT/$name" -max_total_time="$SECS" -max_len=65536 \
	    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	    -artifact_prefix="$OUT/$name-" "$corpus" $seeds \
	    >"$OUT/$name.log" 2>&1; then
		echo "$name: FAILED, see $OUT/$name.log" >&2
		tail -n 30 "$OUT/$name.log" >&2
		status=1
	fi
	grep -E '^stat::number_of_executed_units|^Done [0-9]+ runs' \
	    "$OUT/$name.log"
done
exit $status
