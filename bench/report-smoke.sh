#!/usr/bin/env bash
# Smoke test of the benchmark report (CI-safe): runs `QUICK=1 bench/report.sh` into a
# temporary directory (bench/results/ is left alone) and checks that report.md and
# report.svg were produced and are well-formed: every section present, every table row with
# as many cells as its header, a figure in every ours/other cell, no failures, and an SVG
# that parses as XML with its three charts and labelled axes. It asserts no speed: the
# figures of a smoke run are indicative only. Bounded in time (SMOKE_TIMEOUT, 600 s default:
# the first run also builds the release contenders).
#   bash bench/report-smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d "${TMPDIR:-/tmp}/update-lock-report-smoke.XXXXXX")
trap 'rm -rf "$out"' EXIT

echo "==> QUICK=1 bench/report.sh (into $out)" >&2
start=$(date +%s)
QUICK=1 OUT_DIR=$out timeout --kill-after=10 "${SMOKE_TIMEOUT:-600}" bash bench/report.sh
echo "==> report produced in $(( $(date +%s) - start )) s; checking its form" >&2

python3 - "$out/report.md" "$out/report.svg" <<'PY'
import re
import sys
import xml.etree.ElementTree as ET

md_path, svg_path = sys.argv[1], sys.argv[2]
md = open(md_path, encoding="utf-8").read()
errors = []

for section in ("# Benchmark report", "| Machine | |", "## How to read this", "## Acquire+release rate",
                "## `lockctl run -- true` against `flock FILE true`", "## Wake-up latency after release",
                "## Resident memory of a process holding the lock", "## Binary size",
                "## Targets of earlier issues: met or missed", "## Headline"):
    if section not in md:
        errors.append(f"missing section {section!r}")
if "## Failures" in md:
    errors.append("the report lists failures:\n" + md.split("## Failures", 1)[1].split("\n## ", 1)[0])

# Every table: rows with as many cells as the header, a separator line after the header.
tables, cur = [], []
for line in md.splitlines() + [""]:
    if line.startswith("|"):
        cur.append(line)
    elif cur:
        tables.append(cur)
        cur = []
cells = lambda line: [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
for t in tables:
    n = len(cells(t[0]))
    if len(t) < 3 or not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", t[1].replace(" ", "")):
        errors.append(f"table without separator or rows: {t[0]}")
    for row in t[2:]:
        if len(cells(row)) != n:
            errors.append(f"row has {len(cells(row))} cells, header {n}: {row}")

# The rate table: ours of every language, with a figure on both sides and a ratio.
rate = next((t for t in tables if t[0].startswith("| Language | Ours | Other |")), None)
if rate is None:
    errors.append("no rate table")
else:
    langs = {cells(r)[0] for r in rate[2:]}
    for lang in ("Rust", "C", "Python", "Node.js", "shell"):
        if lang not in langs:
            errors.append(f"rate table has no {lang} rows")
    for r in rate[2:]:
        c = cells(r)
        if not (re.match(r"[\d,]+/s", c[3]) and re.match(r"[\d,]+/s", c[4]) and re.match(r"\d+\.\d\d \(", c[5])):
            errors.append(f"rate row without figures: {r}")
wake = next((t for t in tables if t[0].startswith("| Language | Waiter |")), None)
if wake is None or len(wake) < 2 + 10:
    errors.append("wake-up table missing or short")
mem = next((t for t in tables if t[0].startswith("| Language | Process | VmRSS |")), None)
if mem is None or not all(re.match(r"\d+\.\d MiB", cells(r)[2]) for r in mem[2:]):
    errors.append("memory table missing or without figures")
if not re.search(r"\| `lockctl` \(release profile.*\| [\d,]+ bytes", md):
    errors.append("no lockctl binary size")
if not re.search(r"`lockctl run` ÷ `flock` median wall time: \*\*\d+\.\d\dx\*\*", md):
    errors.append("no lockctl run / flock ratio")

try:
    root = ET.parse(svg_path).getroot()
except ET.ParseError as e:
    errors.append(f"report.svg is not well-formed XML: {e}")
else:
    if not root.tag.endswith("svg"):
        errors.append(f"report.svg root is {root.tag}")
    text = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
    for want in ("Acquire + release rate", "Wake-up latency", "Resident memory", "operations per second (log scale)",
                 "milliseconds (log scale)", "MiB (log scale)", "update-lock (ours)"):
        if want not in text:
            errors.append(f"report.svg lacks the text {want!r}")
    if sum(1 for t in root.iter() if t.tag.endswith("rect")) < 30:
        errors.append("report.svg has too few bars")

if errors:
    print("report smoke test FAILED:", *errors, sep="\n- ", file=sys.stderr)
    sys.exit(1)
print(f"report smoke test passed: {len(tables)} tables, {sum(len(t) - 2 for t in tables)} rows, SVG well-formed")
PY
