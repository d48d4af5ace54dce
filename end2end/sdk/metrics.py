"""Reads Prometheus metrics with the official Prometheus Python client's parser.

  metrics.py parse < exposition      prints the families as one JSON line
  metrics.py queries DASHBOARD RULES prints the metric names a Grafana dashboard (JSON) and a
                                     Prometheus rule file (YAML) query, as one JSON line

Used by server/tests/integration/metrics.rs: the test scrapes a real instance and compares.
"""
import json
import re
import sys

import yaml
from prometheus_client.parser import text_string_to_metric_families

METRIC_NAME = re.compile(r"\bonramp_[a-z0-9_]+\b")


def parse(text):
    families = []
    for family in text_string_to_metric_families(text):
        samples = [
            {"name": s.name, "labels": s.labels, "value": s.value} for s in family.samples
        ]
        families.append({"name": family.name, "type": family.type, "samples": samples})
    return families


def dashboard_exprs(dashboard):
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            if "expr" in target:
                yield target["expr"]


def rule_exprs(rules):
    for group in rules["groups"]:
        for rule in group["rules"]:
            yield rule["expr"]


def queries(dashboard_path, rules_path):
    with open(dashboard_path) as f:
        exprs = list(dashboard_exprs(json.load(f)))
    with open(rules_path) as f:
        exprs += list(rule_exprs(yaml.safe_load(f)))
    names = sorted({name for expr in exprs for name in METRIC_NAME.findall(expr)})
    return {"expressions": len(exprs), "metrics": names}


if __name__ == "__main__":
    if sys.argv[1] == "parse":
        print(json.dumps(parse(sys.stdin.read())))
    else:
        print(json.dumps(queries(sys.argv[2], sys.argv[3])))
