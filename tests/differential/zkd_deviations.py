"""Machine-readable deviation directives, read from DEVIATIONS.md (see README.md, "Deviation directives").

Directives live in HTML comments that start with `diff:`; one directive per line:

    <!-- diff: skip-op reconnectBadPassword -->
    <!-- diff:
    ignore-field */frames.*.connect.timeOut
    equal-errors check -6 0
    -->
"""

import fnmatch
import re

from zkd_gen import ALL_KINDS, MULTI_SUB

BLOCK_RE = re.compile(r"<!--\s*diff:(.*?)-->", re.S)
REPLY_KINDS = set(ALL_KINDS) | {"setup"}


class DeviationError(ValueError):
    pass


class Deviations:
    def __init__(self):
        self.skip_ops = set()
        self.skip_sub = set()
        self.ignore_reply = set()
        self.ignore_fields = []
        self.sort_events = False
        self.pings_at_once = False  # used by test_sessions_diff.py only
        self.equal_errors = {}  # kind -> {code: canonical code}
        self.source = None
        self.directives = []

    @property
    def active(self):
        return bool(self.ignore_fields or self.equal_errors or self.ignore_reply or self.sort_events)

    def field_ignored(self, kind, dotted):
        key = f"{kind}/{dotted}"
        for g in self.ignore_fields:
            if fnmatch.fnmatchcase(key, g):
                return True
        return False

    def add(self, line):
        parts = line.split()
        if not parts:
            return
        d, args = parts[0], parts[1:]
        if d == "skip-op":
            if not args:
                raise DeviationError(f"skip-op needs an op kind: {line!r}")
            for a in args:
                if a.startswith("multi:"):
                    if a[6:] not in MULTI_SUB:
                        raise DeviationError(f"unknown multi sub-op kind {a!r} (known: {', '.join(MULTI_SUB)})")
                    self.skip_sub.add(a[6:])
                elif a in ALL_KINDS:
                    self.skip_ops.add(a)
                else:
                    raise DeviationError(f"unknown op kind {a!r} (known: {', '.join(ALL_KINDS)})")
        elif d == "ignore-reply":
            for a in args:
                if a not in REPLY_KINDS:
                    raise DeviationError(f"unknown op kind {a!r}")
                self.ignore_reply.add(a)
        elif d == "ignore-field":
            if not args:
                raise DeviationError(f"ignore-field needs a glob: {line!r}")
            self.ignore_fields.extend(args)
        elif d == "sort-events":
            self.sort_events = True
        elif d == "pings-answered-at-once":
            # test_sessions_diff.py: a ping reply may come ahead of the replies to requests sent before it
            self.pings_at_once = True
        elif d == "equal-errors":
            if len(args) < 3 or args[0] not in REPLY_KINDS:
                raise DeviationError(f"equal-errors KIND CODE CODE...: {line!r}")
            try:
                codes = [int(c) for c in args[1:]]
            except ValueError:
                raise DeviationError(f"equal-errors codes must be integers: {line!r}") from None
            m = self.equal_errors.setdefault(args[0], {})
            for c in codes[1:]:
                m[c] = codes[0]
        else:
            raise DeviationError(f"unknown deviation directive {d!r} in {line!r}")
        self.directives.append(line)


def parse(text, source="<text>"):
    dev = Deviations()
    dev.source = source
    for block in BLOCK_RE.findall(text):
        for line in block.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            dev.add(line)
    return dev


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        dev = Deviations()
        return dev
    return parse(text, path)
