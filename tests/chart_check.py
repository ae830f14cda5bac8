"""The Helm chart (charts/novads) checked without a cluster, as `helm install` would see it.

Usage: python3 tests/chart_check.py NOVADS_BINARY WORK_DIR

With the Helm SDK (PyPI helm-python-sdk: Helm's own Go code, no helm binary): the CRDs of crds/
valid for Kubernetes 1.30; then for the default
values and the value sets in tests/chart/: strict lint for Kubernetes 1.30; render; validate
every core object against Kubernetes 1.30's schemas (PyPI kubernetes-validate) and every
ServiceMonitor and PrometheusRule against prometheus-operator's published schemas
(tests/schemas/); Pod Security `restricted` on every pod; the operator's RBAC as rendered equal
to the file the operator's test kit reads; the configuration the chart writes accepted by
`novads config check`; the alerts through `promtool check rules`, each with a summary, a
description and a runbook section in docs/operations.md; every dashboard query through promtool
(wrapped as a recording rule) and naming only metrics the code exports (or KubeVirt's); bad
values refused by values.schema.json. Prints one line per check; exits 1 on the first failure.
"""

import copy
import json
import os
import pathlib
import re
import subprocess
import sys

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "novads"
SCHEMAS = ROOT / "tests" / "schemas"
KUBE_VERSION = "1.30.0"
RELEASE = "novads"
NAMESPACE = "novads-system"


def check(condition, message):
    """An assertion that still runs under `python3 -O`."""
    if not condition:
        raise SystemExit(f"FAIL: {message}")


def value_sets():
    """(name, values) of every value set the chart is rendered with."""
    sets = [("default", {})]
    for path in sorted((ROOT / "tests" / "chart").glob("values-*.yaml")):
        sets.append((path.stem, yaml.safe_load(path.read_text()) or {}))
    return sets


def render(chart, values):
    """Every rendered object, in template order."""
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = []
    for template, text in sorted(manifests.items()):
        if not template.endswith(".yaml"):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                objects.append((template, document))
    return objects


def lint(values, name):
    report = helm.lint(str(CHART), values, strict=True, kube_version=f"v{KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + [
        {"error": e} for e in report["errors"]
    ]
    check(not problems, f"helm lint --strict ({name}): {problems}")


def validate_core(obj, where):
    try:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        raise SystemExit(f"FAIL: {where}: {error.message} at {list(error.path)}") from None


def published(path):
    return json.loads((SCHEMAS / path).read_text())


def validate_custom(obj, where):
    schema = {
        "ServiceMonitor": "monitoring.coreos.com/servicemonitor_v1.json",
        "PrometheusRule": "monitoring.coreos.com/prometheusrule_v1.json",
    }[obj["kind"]]
    check(obj["apiVersion"] == "monitoring.coreos.com/v1", f"{where}: apiVersion")
    errors = sorted(
        jsonschema.Draft7Validator(published(schema)).iter_errors(obj), key=lambda e: e.path
    )
    check(not errors, f"{where}: {[f'{list(e.path)}: {e.message}' for e in errors]}")


def structural(node):
    """A published schema as a CRD may carry it: without `additionalProperties: false`."""
    if isinstance(node, dict):
        return {
            k: structural(v)
            for k, v in node.items()
            if not (k == "additionalProperties" and v is False)
        }
    if isinstance(node, list):
        return [structural(v) for v in node]
    return node


def pod_spec(obj):
    return obj["spec"]["template"]["spec"] if obj["kind"] == "Deployment" else None


def check_restricted(obj, where):
    """Pod Security Standard `restricted` (v1.30), plus a read-only root file system."""
    spec = pod_spec(obj)
    pod = spec.get("securityContext", {})
    check(pod.get("runAsNonRoot") is True, f"{where}: pod runAsNonRoot")
    check(pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: seccomp")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        check(not spec.get(key), f"{where}: {key}")
    for volume in spec.get("volumes", []):
        check("hostPath" not in volume, f"{where}: hostPath volume")
    for container in spec.get("initContainers", []) + spec["containers"]:
        ctx = container.get("securityContext", {})
        name = f"{where} container {container['name']}"
        check(ctx.get("allowPrivilegeEscalation") is False, f"{name}: allowPrivilegeEscalation")
        check(ctx.get("capabilities", {}).get("drop") == ["ALL"], f"{name}: capabilities")
        check(not ctx.get("capabilities", {}).get("add"), f"{name}: added capabilities")
        check(ctx.get("readOnlyRootFilesystem") is True, f"{name}: readOnlyRootFilesystem")
        check(not ctx.get("privileged"), f"{name}: privileged")
        check("ports" not in container or all("hostPort" not in p for p in container["ports"]),
              f"{name}: hostPort")


def find(objects, kind, name=None):
    found = [o for _, o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    return found


def check_operator(objects, name):
    """Leader election and RBAC as docs/operator.md describes them."""
    deployment = find(objects, "Deployment", f"{RELEASE}-operator")[0]
    spec = deployment["spec"]["template"]["spec"]
    container = spec["containers"][0]
    check(deployment["spec"]["replicas"] >= 2 or name != "default", "operator: 2 replicas")
    check(f"--lease-namespace={NAMESPACE}" in container["args"], "operator: lease namespace")
    env = {e["name"]: e for e in container["env"]}
    check(
        env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name",
        "operator: POD_NAME from the downward API",
    )
    account = spec["serviceAccountName"]
    binding = find(objects, "ClusterRoleBinding", "novads-operator")[0]
    check(binding["roleRef"]["name"] == "novads-operator", "operator: ClusterRoleBinding role")
    check(
        binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}],
        "operator: ClusterRoleBinding subject",
    )
    lease = find(objects, "RoleBinding", "novads-operator-leader-election")[0]
    check(lease["metadata"]["namespace"] == NAMESPACE, "operator: lease RoleBinding namespace")
    check(lease["subjects"][0]["name"] == account, "operator: lease RoleBinding subject")
    role = find(objects, "Role", "novads-operator-leader-election")[0]
    check(role["metadata"]["namespace"] == NAMESPACE, "operator: lease Role namespace")
    # The operator's test kit (operator/tests/support/rbac.rs) checks every request the
    # controllers make against rbac-operator.yaml; the rendered rules must be those.
    text = (CHART / "templates" / "rbac-operator.yaml").read_text()
    text = text.replace("{{ .Release.Namespace }}", NAMESPACE)
    from_file = [d for d in yaml.safe_load_all(text) if d]
    for document in from_file:
        rendered = find(objects, document["kind"], document["metadata"]["name"])
        check(len(rendered) == 1, f"rendered {document['kind']} {document['metadata']['name']}")
        check(rendered[0]["rules"] == document["rules"], f"{document['kind']} rules as the kit reads them")
    serve = find(objects, "Deployment", f"{RELEASE}-serve")
    for deployment in serve:
        spec = deployment["spec"]["template"]["spec"]
        check(spec.get("automountServiceAccountToken") is True, "serve: an API token")
        check(spec["serviceAccountName"] != account, "serve: its own ServiceAccount")
        binding = find(objects, "ClusterRoleBinding", "novads-serve")[0]
        check(binding["roleRef"]["name"] == "novads-serve", "serve: ClusterRoleBinding role")
        check(
            binding["subjects"]
            == [{"kind": "ServiceAccount", "name": spec["serviceAccountName"], "namespace": NAMESPACE}],
            "serve: ClusterRoleBinding subject",
        )
    # The admin API's test kit (api/tests/support/kube.rs) checks every request against
    # rbac-serve.yaml; the rendered rules must be those.
    for document in [d for d in yaml.safe_load_all((CHART / "templates" / "rbac-serve.yaml").read_text()) if d]:
        rendered = find(objects, document["kind"], document["metadata"]["name"])
        check(len(rendered) == 1, f"rendered {document['kind']} {document['metadata']['name']}")
        check(rendered[0]["rules"] == document["rules"], f"serve {document['kind']} rules as the kit reads them")


def check_serve(objects, name, novads, work):
    """Probes, PDB, and the configuration the chart writes, checked by `novads config check`."""
    deployment = find(objects, "Deployment", f"{RELEASE}-serve")[0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    check(container["readinessProbe"]["httpGet"]["path"] == "/readyz", "serve: readiness")
    check(container["livenessProbe"]["httpGet"]["path"] == "/healthz", "serve: liveness")
    replicas = deployment["spec"]["replicas"]
    pdbs = find(objects, "PodDisruptionBudget")
    check((replicas > 1) == bool(pdbs), f"serve ({name}): a PodDisruptionBudget when replicated")
    secrets = [s for s in find(objects, "Secret") if s["metadata"]["name"].endswith("-config")]
    check(len(secrets) == 1, "serve: the configuration Secret")
    text = secrets[0]["stringData"]["novads.yaml"]
    # The mounted Secrets, replaced by files here.
    work.mkdir(parents=True, exist_ok=True)
    kek = work / f"{name}-kek"
    kek.write_bytes(os.urandom(32))
    password = work / f"{name}-db-password"
    password.write_text("secret\n")
    text = text.replace("/run/secrets/novads-kek/kek", str(kek))
    text = text.replace("/run/secrets/novads-database/password", str(password))
    text = text.replace("/var/lib/novads/", f"{work}/")
    config = work / f"{name}-novads.yaml"
    config.write_text(text)
    env = dict(os.environ)
    env.pop("NOVADS_DATABASE_URL", None)
    for variable in container["env"]:
        # Variables from Secrets (the database URL, realms' bind passwords) must be set.
        if "secretKeyRef" in variable.get("valueFrom", {}):
            env[variable["name"]] = "from-a-secret"
    if "NOVADS_DATABASE_URL" in env:
        env["NOVADS_DATABASE_URL"] = "postgres://novads@db.example/novads"
    result = subprocess.run(
        [novads, "config", "check", "--config", str(config)],
        capture_output=True, text=True, env=env, check=False,
    )
    check(result.returncode == 0, f"novads config check ({name}): {result.stderr}{text}")


def promtool(rule_file):
    result = subprocess.run(
        ["promtool", "check", "rules", str(rule_file)], capture_output=True, text=True, check=False
    )
    check(result.returncode == 0, f"promtool check rules {rule_file}: {result.stdout}{result.stderr}")


def check_alerts(objects, work):
    rules = find(objects, "PrometheusRule")
    check(len(rules) == 1, "one PrometheusRule")
    groups = rules[0]["spec"]["groups"]
    path = work / "alerts.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    promtool(path)
    runbook = (ROOT / "docs" / "operations.md").read_text()
    headings = {h.strip().lower() for h in re.findall(r"^#{2,4} (.+)$", runbook, re.M)}
    alerts = [r for g in groups for r in g["rules"] if "alert" in r]
    for alert in alerts:
        name = alert["alert"]
        for key in ("summary", "description", "runbook_url"):
            check(alert.get("annotations", {}).get(key), f"{name}: annotation {key}")
        check(alert["annotations"]["runbook_url"].endswith("#" + name.lower()), f"{name}: runbook anchor")
        check(name.lower() in headings, f"{name}: a runbook section in docs/operations.md")
    return [a["expr"] for a in alerts], [a["alert"] for a in alerts]


# Grafana's variables, replaced by what they stand for so that promtool can parse the query.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def dashboard_queries(objects):
    maps = [o for o in find(objects, "ConfigMap") if "dashboard" in o["metadata"]["name"]]
    check(len(maps) == 4, f"four dashboards, got {len(maps)}")
    queries = []
    for config_map in maps:
        for key, text in config_map["data"].items():
            board = json.loads(text)
            check(board.get("uid") and board.get("title"), f"{key}: uid and title")
            variables = {v["name"] for v in board.get("templating", {}).get("list", [])}
            for panel in board["panels"]:
                for target in panel.get("targets", []):
                    expr = target["expr"]
                    for variable, value in GRAFANA_VARIABLES.items():
                        expr = expr.replace(variable, value)
                    for variable in re.findall(r"\$(\w+)", expr):
                        check(variable in variables, f"{key}: unknown variable ${variable}")
                        expr = expr.replace(f"${variable}", ".*")
                    queries.append((f"{key}: {panel['title']}", expr))
    return queries


PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan",
}


def metric_names(expr):
    """The metric names a PromQL expression reads (strings, label matchers, grouping labels,
    ranges and function names removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    # Numbers and durations (`offset 5m`, `> 0.5`).
    text = re.sub(r"(?<![\w:])\d+(?:\.\d+)?(?:e[+-]?\d+)?(?:ms|[smhdwy])?(?![\w:])", " ", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word = match.group(0)
        following = text[match.end():].lstrip()
        if word.lower() in PROMQL_WORDS or following.startswith("("):
            continue
        names.add(word)
    return names


def exported_metrics():
    """Metric names the Rust code registers: string literals given to the prometheus crate's
    constructors. The API's registry adds the prefix `novads_` (api/src/metrics.rs); the
    monitor's metrics pass their names through `name("...")`, which adds it
    (monitor/src/metrics.rs)."""
    constructor = re.compile(
        r'\b(?:Opts|HistogramOpts|IntGauge|IntCounter|Gauge|Counter|Histogram)::new\(\s*"([a-z_:][a-z0-9_:]*)"'
    )
    monitor_name = re.compile(r'\bname\(\s*"([a-z_:][a-z0-9_:]*)"\s*\)')
    names = set()
    for crate in ("api", "operator", "monitor"):
        for source in (ROOT / crate / "src").rglob("*.rs"):
            text = source.read_text()
            for name in constructor.findall(text):
                if crate == "api" and not name.startswith("novads_"):
                    name = "novads_" + name
                names.add(name)
            if crate == "monitor":
                names.update("novads_" + name for name in monitor_name.findall(text))
    return names


# KubeVirt's own metrics the virtual-servers dashboard joins (kubevirt.io's metrics reference).
KUBEVIRT_METRICS = {
    "kubevirt_vmi_cpu_usage_seconds_total",
    "kubevirt_vmi_memory_available_bytes",
    "kubevirt_vmi_memory_usable_bytes",
    "kubevirt_vmi_network_receive_bytes_total",
    "kubevirt_vmi_network_transmit_bytes_total",
    "kubevirt_vmi_storage_read_traffic_bytes_total",
    "kubevirt_vmi_storage_write_traffic_bytes_total",
}


def check_metric_names(queries, exported):
    known = exported | KUBEVIRT_METRICS
    for where, expr in queries:
        for name in metric_names(expr):
            base = re.sub(r"_(bucket|count|sum)$", "", name)
            check(
                name in known or base in known,
                f"{where}: metric {name} is exported neither by novads nor by KubeVirt",
            )


def check_queries_parse(queries, work):
    rules = [{"record": f"novads:dashboard_query:{i}", "expr": expr} for i, (_, expr) in enumerate(queries)]
    path = work / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    promtool(path)


def check_openreports(objects):
    crds = {o["metadata"]["name"]: o for o in find(objects, "CustomResourceDefinition")}
    for name, schema in [
        ("reports.openreports.io", "openreports.io/report_v1alpha1.json"),
        ("clusterreports.openreports.io", "openreports.io/clusterreport_v1alpha1.json"),
    ]:
        check(name in crds, f"the OpenReports CRD {name}")
        version = crds[name]["spec"]["versions"][0]
        check(version["name"] == "v1alpha1", f"{name}: v1alpha1")
        check(
            version["schema"]["openAPIV3Schema"] == structural(published(schema)),
            f"{name}: its schema is the published one",
        )


def check_bad_values(chart):
    """Mistakes values.schema.json must refuse before anything renders."""
    bad = [
        {"serve": {"replicas": 2}},  # SQLite has one writer
        {"database": {"type": "postgres"}},  # no Secret for the connection
        {"database": {"type": "mysql"}},
        {"serve": {"issuer": "http://sso.example.org"}},
        {"operator": {"replicas": 0}},
        {"operator": {"leaseDurationSeconds": 1}},
        {"keyEncryptionKey": {"existingSecret": ""}},
        {"monitoring": {"prometheusRule": {"complianceThreshold": 1.5}}},
        {"networkPolicy": {"apiServer": {"cidrs": ["not-a-cidr"]}}},
        {"serve": {"replica": 3}},  # a misspelt key
    ]
    for values in bad:
        try:
            chart.validate_schema(values)
        except helm.HelmValuesError:
            continue
        raise SystemExit(f"FAIL: values.schema.json accepted {values}")
    print(f"ok: values.schema.json refuses {len(bad)} bad value sets")


def main():
    novads, work = sys.argv[1], pathlib.Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    chart = helm.Chart.load(str(CHART))
    check_bad_values(chart)
    # The CRDs Helm installs from crds/ (equal to `novads crds`, crds/tests/generated_yaml.rs).
    crds = [yaml.safe_load(crd["data"]) for crd in chart.crds]
    check(crds, "the novads CRDs in crds/")
    for crd in crds:
        check(crd["metadata"]["name"].endswith(".novads.io"), f"crds/ holds {crd['metadata']['name']}")
        validate_core(crd, f"crds/{crd['metadata']['name']}")
    print(f"ok: {len(crds)} CRDs in crds/ valid for Kubernetes {KUBE_VERSION}")
    exported = exported_metrics()
    check({"novads_login_attempts_total", "novads_operator_leader"} <= exported,
          f"metric names found in the code: {sorted(exported)}")
    for name, values in value_sets():
        lint(values, name)
        objects = render(chart, values)
        kinds = {}
        for template, obj in objects:
            where = f"{name}: {template}: {obj['kind']} {obj['metadata']['name']}"
            check(obj["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "novads",
                  f"{where}: standard labels")
            if obj["kind"] in ("ServiceMonitor", "PrometheusRule"):
                validate_custom(obj, where)
            else:
                validate_core(obj, where)
            if pod_spec(obj) is not None:
                check_restricted(obj, where)
            kinds[obj["kind"]] = kinds.get(obj["kind"], 0) + 1
        check_operator(objects, name)
        check_serve(objects, name, novads, work / name)
        if find(objects, "PrometheusRule"):
            alert_exprs, alerts = check_alerts(objects, work)
            queries = dashboard_queries(objects)
            check_queries_parse(queries, work)
            check_metric_names(queries + [("alerts", e) for e in alert_exprs], exported)
            print(f"ok: {name}: {len(alerts)} alerts and {len(queries)} dashboard queries parse "
                  f"and name exported metrics")
        if find(objects, "CustomResourceDefinition"):
            check_openreports(objects)
        summary = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
        print(f"ok: {name}: lint --strict, {len(objects)} objects valid ({summary})")


if __name__ == "__main__":
    main()
