# SPDX-License-Identifier: Apache-2.0
"""What the monitoring files (deploy/monitoring/) ask of the sidecar's
/metrics: the loopwatch_ sample names and the labels their PromQL uses.

uses_of_rules() and uses_of_dashboard() read the files; check() compares
what they use with a scrape of the real sidecar (sidecar_harness.parse_metrics).
Standard library only, except PyYAML for the rule file."""

import json
import re

# Labels Prometheus adds to every series of the scrape (target labels, from
# the relabelling in podmonitor.yaml and prometheus-scrape.yaml). Every other
# label must come from the sidecar.
PROMETHEUS_LABELS = {"namespace", "pod", "container", "job", "instance", "node"}

AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
                "count_values", "bottomk", "topk", "quantile"}
# Clauses whose labels must be on every loopwatch_ series in their scope, and
# clauses that only exclude labels (they must exist on one of them at least).
MUST_CARRY = {"by", "on", "group_left", "group_right"}
MAY_CARRY = {"without", "ignoring"}

GRAFANA_VARS = re.compile(r"\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|"
                          r"__interval|__range)\}")

_TOKEN = re.compile(r"""
    (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<num>[0-9.]+[a-zA-Z0-9.]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],@])
  | (?P<space>\s+)
  | (?P<other>.)
""", re.VERBOSE)


class Use:
    """One thing an expression asks of a loopwatch_ series."""

    def __init__(self, where, kind, metrics, labels=()):
        self.where = where      # e.g. "prometheusrule.yaml: LoopwatchLoopDead expr"
        self.kind = kind        # "name", "selector", "by", "without", "legend", ...
        self.metrics = sorted(set(metrics))
        self.labels = sorted(set(labels))

    def __repr__(self):
        return "<%s %s %s %s>" % (self.where, self.kind, self.metrics, self.labels)


def _tokens(expr):
    out = []
    for m in _TOKEN.finditer(expr):
        kind = m.lastgroup
        if kind == "space":
            continue
        if kind == "other":
            raise ValueError("cannot tokenise %r at %r" % (expr, m.group()))
        out.append((kind, m.group()))
    return out


def _group_end(toks, i):
    """toks[i] is "(": the index of its ")"."""
    depth = 0
    for j in range(i, len(toks)):
        if toks[j][1] == "(":
            depth += 1
        elif toks[j][1] == ")":
            depth -= 1
            if depth == 0:
                return j
    raise ValueError("unbalanced parentheses")


def _group_start(toks, j):
    """toks[j] is ")": the index of its "("."""
    depth = 0
    for i in range(j, -1, -1):
        if toks[i][1] == ")":
            depth += 1
        elif toks[i][1] == "(":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError("unbalanced parentheses")


def _enclosing(toks, i):
    """The (start, end) token range of the innermost group around toks[i]
    (the whole expression at the top level)."""
    depth = 0
    for s in range(i - 1, -1, -1):
        if toks[s][1] == ")":
            depth += 1
        elif toks[s][1] == "(":
            if depth == 0:
                return s, _group_end(toks, s)
            depth -= 1
    return 0, len(toks) - 1


def _metrics_in(toks, lo, hi):
    return [t for k, t in toks[lo:hi + 1] if k == "ident" and t.startswith("loopwatch_")]


def _label_list(toks, i):
    """toks[i] is "(" of a clause's label list: (labels, index of ")")."""
    end = _group_end(toks, i)
    return [t for k, t in toks[i + 1:end] if k == "ident"], end


def uses_of_expr(expr, where):
    """Every Use of one PromQL expression."""
    expr = GRAFANA_VARS.sub("5m", expr)
    toks = _tokens(expr)
    uses = []
    for i, (kind, text) in enumerate(toks):
        if kind != "ident":
            continue
        nxt = toks[i + 1][1] if i + 1 < len(toks) else None
        prev = toks[i - 1][1] if i > 0 else None
        if text.startswith("loopwatch_"):
            uses.append(Use(where, "name", [text]))
            if nxt == "{":
                labels, j = [], i + 2
                while toks[j][1] != "}":
                    if toks[j][0] == "ident" and toks[j + 1][1] in ("=", "!=", "=~", "!~"):
                        labels.append(toks[j][1])
                    j += 1
                if labels:
                    uses.append(Use(where, "selector", [text], labels))
        elif text in MUST_CARRY | MAY_CARRY and nxt == "(":
            labels, end = _label_list(toks, i + 1)
            if text in ("by", "without"):
                if prev == ")":                      # sum(EXPR) by (labels)
                    hi = i - 1
                    lo = _group_start(toks, hi)
                else:                                # sum by (labels) (EXPR)
                    lo = end + 1
                    hi = _group_end(toks, lo)
            else:                                    # a on (labels) b
                lo, hi = _enclosing(toks, i)
            metrics = _metrics_in(toks, lo, hi)
            if metrics and labels:
                uses.append(Use(where, text, metrics, labels))
    return uses


def uses_of_label_values(query, where):
    """A Grafana variable query label_values(SELECTOR, LABEL)."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*", query)
    if not m:
        return uses_of_expr(query, where)
    uses = uses_of_expr(m.group(1), where)
    metrics = _metrics_in(_tokens(m.group(1)), 0, 10 ** 6)
    uses.append(Use(where, "label_values", metrics, [m.group(2)]))
    return uses


def uses_of_legend(legend, expr, where):
    """Labels a legend shows must be on one of the expression's series."""
    labels = re.findall(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}", legend or "")
    metrics = _metrics_in(_tokens(GRAFANA_VARS.sub("5m", expr)), 0, 10 ** 6)
    if labels and metrics:
        return [Use(where, "legend", metrics, labels)]
    return []


def _go_string(s):
    return re.sub(r'\\(.)', r'\1', s)


def uses_of_rules(path):
    """Every Use of the PrometheusRule: each expr, the PromQL the annotation
    templates query, and every loopwatch_ name anywhere in the file (also in
    comments)."""
    import yaml
    text = open(path, encoding="utf-8").read()
    doc = yaml.safe_load(text)
    uses = []
    for group in doc["spec"]["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            uses += uses_of_expr(rule["expr"], "%s: %s expr" % (path.name, name))
            for key, value in (rule.get("annotations") or {}).items():
                for q in re.findall(r'printf "((?:[^"\\]|\\.)*)"', value):
                    q = _go_string(q).replace("%q", '"x"').replace("%s", "x")
                    uses += uses_of_expr(q, "%s: %s annotation %s" % (path.name, name, key))
    for n in sorted(set(re.findall(r"\bloopwatch_[a-zA-Z0-9_:]*", text))):
        uses.append(Use("%s (text)" % path.name, "name", [n]))
    return uses


def _panels(dash):
    for p in dash.get("panels", []):
        yield p
        for q in p.get("panels", []) or []:
            yield q


def uses_of_dashboard(path):
    dash = json.loads(open(path, encoding="utf-8").read())
    uses = []
    for p in _panels(dash):
        for t in p.get("targets", []) or []:
            if "expr" not in t:
                continue
            where = "%s: panel %r target %s" % (path.name, p.get("title"), t.get("refId"))
            uses += uses_of_expr(t["expr"], where)
            uses += uses_of_legend(t.get("legendFormat"), t["expr"], where)
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        uses += uses_of_label_values(q, "%s: variable %s" % (path.name, v.get("name")))
    return uses


def sample_index(samples):
    """sidecar_harness.parse_metrics() output -> {sample name: set of label names}."""
    index = {}
    for (name, labels) in samples:
        index.setdefault(name, set()).update(k for k, _ in labels)
    return index


def check(uses, index):
    """What the uses ask that the scrape does not have: a list of problems
    (empty when everything is there)."""
    problems = []
    for u in uses:
        missing_names = [m for m in u.metrics if m not in index]
        for m in missing_names:
            problems.append("%s: %s is not in the sidecar's /metrics" % (u.where, m))
        present = [m for m in u.metrics if m in index]
        if u.kind == "name" or not present:
            continue
        for label in u.labels:
            if label in PROMETHEUS_LABELS:
                continue
            carriers = [m for m in present if label in index[m]]
            if u.kind in MAY_CARRY or u.kind == "legend":
                ok = bool(carriers)
            else:
                ok = len(carriers) == len(present)
            if not ok:
                problems.append("%s: label %r (%s) is not on %s" % (
                    u.where, label, u.kind,
                    ", ".join(m for m in present if m not in carriers)))
    return sorted(set(problems))
