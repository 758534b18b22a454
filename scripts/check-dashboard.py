#!/usr/bin/env python3
"""Validates deploy/grafana-dashboard.json offline (run by scripts/check-deploy).

- the dashboard's structure: required keys, unique panel ids, panels inside the 24-column
  grid without overlapping, every query on the `${datasource}` variable, every variable a
  query uses defined;
- every query's PromQL is balanced (brackets, quotes) and names only metrics the services
  export (read from crates/kit/src/metrics.rs and named as the collector's Prometheus
  exporter names them: dots to underscores, `_seconds` for unit s, `_total` for
  counters, `_bucket`/`_count`/`_sum` for histograms) or RabbitMQ's own (`rabbitmq_*`);
- every metric the services export is on some panel.
"""

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"
METRICS = ROOT / "crates" / "kit" / "src" / "metrics.rs"

PROMQL_WORDS = {
    # aggregations and their modifiers
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk",
    "quantile", "count_values", "group", "by", "without", "on", "ignoring",
    "group_left", "group_right", "and", "or", "unless", "bool", "offset",
    # functions
    "rate", "irate", "increase", "delta", "idelta", "deriv", "histogram_quantile",
    "label_values", "abs", "clamp_min", "clamp_max", "ceil", "floor", "round",
    "time", "vector", "scalar", "absent", "max_over_time", "min_over_time",
    "avg_over_time", "sum_over_time", "count_over_time", "last_over_time", "sort",
    "sort_desc",
}


def exported():
    """Prometheus name → the names it is queried by."""
    source = METRICS.read_text()
    names = {}
    pattern = re.compile(
        r'\.(f64_histogram|u64_counter|u64_gauge|f64_gauge|i64_up_down_counter)\(\s*"([^"]+)"\s*\)'
        r'(?:\s*\.with_unit\(\s*"([^"]+)"\s*\))?'
    )
    for kind, name, unit in pattern.findall(source):
        base = name.replace(".", "_")
        if unit == "s":
            base += "_seconds"
        if kind == "f64_histogram":
            names[base] = {base + s for s in ("_bucket", "_count", "_sum")}
        elif kind == "u64_counter":
            names[base] = {base + "_total"}
        else:
            names[base] = {base}
    if not names:
        sys.exit(f"no metrics found in {METRICS}")
    return names


def metric_names(expr):
    """The metric names an expression selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^{}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # dashboard variables
    names = set()
    for token in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        if token not in PROMQL_WORDS and not re.fullmatch(r"\d.*", token):
            names.add(token)
    return names


def balanced(expr):
    pairs = {")": "(", "]": "[", "}": "{"}
    stack = []
    in_string = False
    previous = ""
    for ch in expr:
        if in_string:
            if ch == '"' and previous != "\\":
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            if not stack or stack.pop() != pairs[ch]:
                return False
        previous = ch
    return not stack and not in_string


def main():
    errors = []
    try:
        dash = json.loads(DASHBOARD.read_text())
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"{DASHBOARD}: {e}")
    for key in ("title", "uid", "panels", "templating", "schemaVersion"):
        if key not in dash:
            errors.append(f"missing top-level key {key!r}")
    variables = {v.get("name") for v in dash.get("templating", {}).get("list", [])}
    known = exported()
    queryable = set().union(*known.values())
    used = set()
    ids = set()
    cells = {}
    for panel in dash.get("panels", []):
        title = panel.get("title", "?")
        pid = panel.get("id")
        if pid in ids:
            errors.append(f"{title}: duplicate panel id {pid}")
        ids.add(pid)
        grid = panel.get("gridPos") or {}
        x, y, w, h = (grid.get(k) for k in ("x", "y", "w", "h"))
        if None in (x, y, w, h) or x < 0 or w < 1 or x + w > 24 or h < 1:
            errors.append(f"{title}: gridPos {grid} is outside the 24-column grid")
            continue
        for cx in range(x, x + w):
            for cy in range(y, y + h):
                if (cx, cy) in cells:
                    errors.append(f"{title}: overlaps {cells[(cx, cy)]}")
                    break
                cells[(cx, cy)] = title
            else:
                continue
            break
        if panel.get("type") == "row":
            continue
        targets = panel.get("targets") or []
        if not targets:
            errors.append(f"{title}: no queries")
        for target in [panel] + targets:
            uid = (target.get("datasource") or {}).get("uid")
            if uid != "${datasource}":
                errors.append(f"{title}: datasource {uid!r} is not ${{datasource}}")
        for target in targets:
            expr = target.get("expr", "")
            if not expr or not balanced(expr):
                errors.append(f"{title}: unbalanced or empty query {expr!r}")
                continue
            for var in re.findall(r"\$\{?(\w+)\}?", expr):
                if not var.startswith("__") and var not in variables:
                    errors.append(f"{title}: ${var} is not a dashboard variable")
            for name in metric_names(expr):
                if name.startswith("rabbitmq_"):
                    continue
                if name not in queryable:
                    errors.append(f"{title}: {name} is not a metric the services export")
                used.add(name)
    for base, names in sorted(known.items()):
        if not names & used:
            errors.append(f"{base}: exported by the services but on no panel")
    for error in errors:
        print(f"{DASHBOARD.relative_to(ROOT)}: {error}", file=sys.stderr)
    if errors:
        sys.exit(1)
    print(f"{DASHBOARD.relative_to(ROOT)}: {len(ids)} panels, {len(known)} metrics, all on a panel")


if __name__ == "__main__":
    main()
