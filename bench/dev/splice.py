"""Puts a compare.sh summary into bench/RESULTS.md: the table, the ceilings-and-targets block and the
cross-check block (each the first fenced block after its heading) are replaced by the summary's; the text
around them (the header's date, revision and machine, the reading) is left to be rewritten by hand.

    python3 bench/dev/splice.py BENCH_DIR/summary.txt bench/RESULTS.md
"""
import sys


def find(lines, pred, start=0):
    for i in range(start, len(lines)):
        if pred(lines[i]):
            return i
    sys.exit(f"splice: expected line not found after line {start}")


def trim(block):
    while block and not block[-1].strip():
        block.pop()
    return block


summary = open(sys.argv[1]).read().split("\n")
results = open(sys.argv[2]).read().split("\n")
table = find(summary, lambda l: l.startswith("medians of the pairs"))
probes = find(summary, lambda l: l.startswith("probes before"))
cross = find(summary, lambda l: l.startswith("cross-check, one fresh"))
total = find(summary, lambda l: l.startswith("total time"))
blocks = {
    "## The table": trim(summary[table:probes]),
    "## The machine's ceiling": trim(summary[probes:cross]),
    "## Cross-check": trim(summary[cross:total]),
}
for heading, new in blocks.items():
    h = find(results, lambda l: l.startswith(heading))
    a = find(results, lambda l: l.startswith("```"), h)
    b = find(results, lambda l: l.startswith("```"), a + 1)
    results = results[:a + 1] + new + results[b:]
open(sys.argv[2], "w").write("\n".join(results))
