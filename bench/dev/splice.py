"""Puts a compare.sh summary into bench/RESULTS.md: the table, the ceilings-and-targets block and the
cross-check block (each the first fenced block after its heading) are replaced by the summary's; the text
around them (the header's date, revision and machine, the reading) is left to be rewritten by hand. A
summary without a cross-check (CROSSCHECK=0) leaves RESULTS.md's cross-check block as it was.

    python3 bench/dev/splice.py BENCH_DIR/summary.txt bench/RESULTS.md
"""
import sys


def find(lines, pred, start=0, required=True):
    for i in range(start, len(lines)):
        if pred(lines[i]):
            return i
    if required:
        sys.exit(f"splice: expected line not found after line {start}")
    return None


def trim(block):
    while block and not block[-1].strip():
        block.pop()
    return block


summary = open(sys.argv[1]).read().split("\n")
results = open(sys.argv[2]).read().split("\n")
table = find(summary, lambda l: l.startswith("medians of the pairs"))
probes = find(summary, lambda l: l.startswith("probes before"))
cross = find(summary, lambda l: l.startswith("cross-check, one fresh"), required=False)
total = find(summary, lambda l: l.startswith("total time"), required=False)
end = len(summary) if total is None else total
blocks = {
    "## The table": trim(summary[table:probes]),
    "## The machine's ceiling": trim(summary[probes:end if cross is None else cross]),
}
if cross is not None:
    blocks["## Cross-check"] = trim(summary[cross:end])
for heading, new in blocks.items():
    h = find(results, lambda l: l.startswith(heading))
    a = find(results, lambda l: l.startswith("```"), h)
    b = find(results, lambda l: l.startswith("```"), a + 1)
    results = results[:a + 1] + new + results[b:]
open(sys.argv[2], "w").write("\n".join(results))
