#!/usr/bin/python3
"""Offline checks of deploy/: every manifest rendered and validated against its upstream schema.

    /usr/bin/python3 tests/deploy/validate_manifests.py BULWARK [-v]

Run by ctest (label `deploy`). Needs Debian's python3-yaml and python3-jsonschema (make deps).
  1. render: every deploy/**/*.yaml, by `BULWARK deploy render` (the one renderer), with the
     defaults (and samples) of deploy/variables.yaml, and again with a canary's values; no
     placeholder undeclared, none left, no variable unused;
  2. schema: each document's apiVersion/kind against deploy/schemas/ (index.json), strictly, as
     `kubectl --validate=strict` would: a field the schema does not know is an error; CRD metadata
     against Kubernetes' ObjectMeta;
  3. Bulwark: every `bulwark` command line uses flags the CLI defines (read from src/cli/), the
     jobs run what the guard's subprocess runner runs (src/control/runner.cpp), guard.yaml uses
     only keys and values src/control/policy.cpp accepts, paths lie on mounted volumes, probes hit
     routes the server has;
  4. security: non-root, no privilege escalation, read-only root file system, ALL capabilities
     dropped, RuntimeDefault seccomp, resource requests and limits, no service-account token;
  5. the Grafana dashboard: valid JSON, and every metric its PromQL names is one src/serve exports;
  6. the Dockerfile: Debian 12 base, multi-stage, `make deps-build`, non-root USER, HEALTHCHECK, apt
     hygiene (hadolint too, when installed);
  7. negative cases: broken variants of the manifests, which each check above must refuse.
Not checked offline: CEL rules (x-kubernetes-validations) and admission webhooks of the operators.
"""
import copy
import json
import os
import re
import sys
import tempfile

import yaml

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEPLOY = os.path.join(REPO, "deploy")
sys.path.insert(0, HERE)
import deploy_render as render  # noqa: E402  `bulwark deploy render`, run
from code_facts import cli_flags, metric_families, src  # noqa: E402
from file_lint import dockerfile_errors, grafana_errors, hadolint_errors  # noqa: E402
from pod_checks import bulwark_errors, reference_errors, security_errors, tokens_errors  # noqa: E402
from schema_check import Schemas  # noqa: E402

VERBOSE = "-v" in sys.argv
ARGS = [a for a in sys.argv[1:] if a != "-v"]

# A second rendering: what the guard's Kubernetes mode renders for a canary of version 7.
CANARY_VALUES = {"MODEL_REF": "7", "CANARY_PERCENT": "10", "GUARD_RUNNER": "thread", "JOB_NAME": "job-1767225600",
                 "JOB_DIR": "/var/lib/bulwark/registry/guard/jobs/job-1767225600", "HARDEN_METHOD": "trades",
                 "IMAGE": "registry.example.com/ml/bulwark@sha256:" + "ab" * 32, "IMAGE_PULL_POLICY": "Always"}


def manifest_files():
    out = []
    for root, dirs, files in os.walk(DEPLOY):
        dirs[:] = sorted(d for d in dirs if d != "schemas")
        for f in sorted(files):
            if f.endswith((".yaml", ".yml")) and os.path.join(root, f) != render.VARIABLES_FILE:
                out.append(os.path.join(root, f))
    return out


def render_all(renderer, given):
    """{relative path: [documents]} with the variables filled in; raises RenderError."""
    values = renderer.values(given)
    out = {}
    for path in manifest_files():
        text = renderer.run([path], given)
        left = re.findall(r"\$\{[^}]*\}", text)
        if left:
            raise render.RenderError(f"{path}: placeholders left after rendering: {left}")
        rel = os.path.relpath(path, REPO)
        out[rel] = [d for d in yaml.safe_load_all(text) if d is not None]
    return out, values


def unused_variables(variables):
    used = set()
    for path in manifest_files():
        with open(path) as f:
            used |= render.placeholders(f.read())
    for spec in variables.values():
        used |= render.placeholders(spec.get("default", ""))
    return sorted(set(variables) - used)


def find_doc(docs_by_file, kind):
    for path, docs in docs_by_file.items():
        for d in docs:
            if d.get("kind") == kind:
                return path, d
    raise KeyError(kind)


def negative_cases(schemas, docs_by_file, values, flags, families, variables, renderer):
    def schema_case(kind, mutate):
        def run():
            _, doc = find_doc(docs_by_file, kind)
            doc = copy.deepcopy(doc)
            mutate(doc)
            return schemas.errors(doc)
        return run

    def whole_case(kind, mutate, check):
        def run():
            docs = copy.deepcopy(docs_by_file)
            _, doc = find_doc(docs, kind)
            mutate(doc)
            return check(docs)
        return run

    def deployment_container(doc):
        return doc["spec"]["template"]["spec"]["containers"][0]

    def runtime_args(doc):
        return doc["spec"]["containers"][0]["args"]

    def guard_policy(doc, key, value):
        conf = yaml.safe_load(doc["data"]["guard.yaml"])
        conf["policy"]["hardening"][key] = value
        doc["data"]["guard.yaml"] = yaml.safe_dump(conf)

    def render_unknown():
        with tempfile.TemporaryDirectory() as d:
            case = os.path.join(d, "case.yaml")
            with open(case, "w") as f:
                f.write("image: ${NO_SUCH_VARIABLE}\n")
            try:
                renderer.run([case], {})
            except render.RenderError as e:
                return [str(e)]
        return []

    def dashboard_unknown_metric():
        with open(os.path.join(DEPLOY, "monitoring", "grafana-dashboard.json")) as f:
            dash = json.load(f)
        dash["panels"][1]["targets"][0]["expr"] = "rate(bulwark_no_such_metric_total[5m])"
        return grafana_errors(dash, families)

    def all_security(docs):
        return [e for ds in docs.values() for d in ds for e in security_errors(d, values)]

    # (what, case, a text the refusal must contain: the right check refused it, for the right reason)
    return [
        ("InferenceService minReplicas as a string",
         schema_case("InferenceService", lambda d: d["spec"]["predictor"].update(minReplicas="one")),
         "minReplicas: 'one' is not of type 'integer'"),
        ("InferenceService with a misspelt field (strict CRD)",
         schema_case("InferenceService", lambda d: d["spec"]["predictor"]["model"].update(storageURI="pvc://x")),
         "'storageURI' was unexpected"),
        ("Deployment with a misspelt field (strict)",
         schema_case("Deployment", lambda d: deployment_container(d)["securityContext"].update(runAsNonroot=True)),
         "'runAsNonroot' was unexpected"),
        ("ServingRuntime without its required containers",
         schema_case("ServingRuntime", lambda d: d["spec"].pop("containers")), "'containers' is a required property"),
        ("ServiceMonitor endpoint port as a number",
         schema_case("ServiceMonitor", lambda d: d["spec"]["endpoints"][0].update(port=8080)),
         "8080 is not of type 'string'"),
        ("TrainJob without runtimeRef", schema_case("TrainJob", lambda d: d["spec"].pop("runtimeRef")),
         "'runtimeRef' is a required property"),
        ("PyTorchJob replicas as a string",
         schema_case("PyTorchJob", lambda d: d["spec"]["pytorchReplicaSpecs"]["Master"].update(replicas="1")),
         "'1' is not of type 'integer'"),
        ("CRD metadata label value as a number (ObjectMeta)",
         schema_case("TrainingRuntime", lambda d: d["metadata"]["labels"].update(tier=3)),
         "metadata: labels.tier: 3 is not of type 'string'"),
        ("an unknown apiVersion", schema_case("Role", lambda d: d.update(apiVersion="rbac.authorization.k8s.io/v1beta1")),
         "no schema for apiVersion"),
        ("an undeclared placeholder", render_unknown, "unknown placeholder ${NO_SUCH_VARIABLE}"),
        ("an InferenceService on a runtime deploy/ does not define",
         whole_case("InferenceService", lambda d: d["spec"]["predictor"]["model"].update(runtime="kserve-torchserve"),
                    lambda docs: reference_errors(docs, values)), "runtime 'kserve-torchserve' is no ServingRuntime"),
        ("a ServiceMonitor selecting no Service",
         whole_case("ServiceMonitor", lambda d: d["spec"]["selector"]["matchLabels"].update(team="x"),
                    lambda docs: reference_errors(docs, values)), "matches no Service"),
        ("a serve flag that does not exist",
         whole_case("ServingRuntime", lambda d: runtime_args(d).append("--no-such-flag=1"),
                    lambda docs: bulwark_errors(docs, flags)), "--no-such-flag is not a flag of bulwark serve"),
        ("a job that drifts from the guard's runner (no --eps)",
         whole_case("TrainJob", lambda d: d["spec"]["trainer"].update(
             args=[re.sub(r"--eps \S+ ", "", d["spec"]["trainer"]["args"][0])]),
                    lambda docs: bulwark_errors(docs, flags)), "the guard's runner passes ['--eps']"),
        ("guard.yaml with a runner policy.cpp refuses",
         whole_case("ConfigMap", lambda d: guard_policy(d, "runner", "nonsense"),
                    lambda docs: bulwark_errors(docs, flags)), "'nonsense' is refused by policy.cpp"),
        ("guard.yaml with an unknown policy key",
         whole_case("ConfigMap", lambda d: guard_policy(d, "epoch", 3), lambda docs: bulwark_errors(docs, flags)),
         "policy.hardening.epoch is no key"),
        ("guard.yaml with a signing key on no volume",
         whole_case("ConfigMap", lambda d: guard_policy(d, "key", "/home/bulwark/signing.key"),
                    lambda docs: bulwark_errors(docs, flags)), "/home/bulwark/signing.key is on no volume"),
        ("a probe on a route the server lacks",
         whole_case("Deployment", lambda d: deployment_container(d)["readinessProbe"]["httpGet"].update(path="/ready"),
                    lambda docs: bulwark_errors(docs, flags)), "path /ready is no route"),
        ("a writable root file system",
         whole_case("Deployment", lambda d: deployment_container(d)["securityContext"].pop("readOnlyRootFilesystem"),
                    all_security), "readOnlyRootFilesystem must be true"),
        ("a container without limits",
         whole_case("PyTorchJob", lambda d: d["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
                    ["containers"][0]["resources"].pop("limits"), all_security), "resources.limits.cpu missing"),
        ("a dashboard querying a metric nobody exports", dashboard_unknown_metric,
         "bulwark_no_such_metric_total is not exported"),
        ("a Dockerfile on debian:latest running as root",
         lambda: dockerfile_errors("FROM debian:latest\nRUN apt-get update\nCMD bulwark serve\n"),
         "the base must be Debian 12"),
        ("a Dockerfile without HEALTHCHECK",
         lambda: dockerfile_errors(re.sub(r"(?m)^HEALTHCHECK .*\n.*\n", "", src("deploy/docker/Dockerfile"))),
         "no HEALTHCHECK"),
        ("a variable declared but used nowhere",
         lambda: unused_variables({**variables, "UNUSED_VARIABLE": {"default": "x", "description": "x"}}),
         "UNUSED_VARIABLE"),
    ]


class Report:
    def __init__(self):
        self.passed = self.failed = 0

    def check(self, what, errors):
        if errors:
            self.failed += 1
            print(f"FAIL {what}")
            for e in errors[:20]:
                print(f"       {e}")
            if len(errors) > 20:
                print(f"       ... {len(errors) - 20} more")
        else:
            self.passed += 1
            print(f"ok   {what}")


def main():
    report = Report()
    try:
        schemas = Schemas()
        flags = cli_flags()
        families = metric_families()
        if len(ARGS) != 1:
            raise ValueError("usage: validate_manifests.py BULWARK [-v] (the bulwark binary renders)")
        renderer = render.Renderer(ARGS[0])
        variables = render.load_variables()
    except (OSError, ValueError, KeyError, yaml.YAMLError, render.RenderError) as e:
        report.check("load deploy/schemas, deploy/variables.yaml and what src/ defines", [str(e)])
        print(f"{report.passed} passed, {report.failed} failed")
        return 1
    report.check("deploy/variables.yaml: every variable is used", [f"{n} is used by no manifest" for n in
                                                                   unused_variables(variables)])
    renderings = {}
    for label, given in (("defaults", {}), ("canary", CANARY_VALUES)):
        try:
            renderings[label] = render_all(renderer, given)
            report.check(f"render ({label})", [])
        except (render.RenderError, yaml.YAMLError) as e:
            report.check(f"render ({label})", [str(e)])
    if not renderings:
        print(f"{report.passed} passed, {report.failed} failed")
        return 1
    for label, (docs_by_file, values) in renderings.items():
        for path, docs in docs_by_file.items():
            for i, doc in enumerate(docs):
                what = f"{path} [{i}] {doc.get('kind')} {doc.get('metadata', {}).get('name')} ({label})"
                report.check(what + ": schema", schemas.errors(doc))
                report.check(what + ": security", security_errors(doc, values))
        report.check(f"bulwark flags, runner parity, guard.yaml, paths, probes ({label})",
                     bulwark_errors(docs_by_file, flags))
        report.check(f"tokens Secret ({label})", tokens_errors(docs_by_file))
        report.check(f"references between objects ({label})", reference_errors(docs_by_file, values))
    dash_path = os.path.join(DEPLOY, "monitoring", "grafana-dashboard.json")
    try:
        with open(dash_path) as f:
            dashboard = json.load(f)
        report.check("deploy/monitoring/grafana-dashboard.json: metrics exported by src/serve",
                     grafana_errors(dashboard, families))
    except ValueError as e:
        report.check("deploy/monitoring/grafana-dashboard.json: valid JSON", [str(e)])
    dockerfile = os.path.join(DEPLOY, "docker", "Dockerfile")
    report.check("deploy/docker/Dockerfile: lint", dockerfile_errors(src("deploy/docker/Dockerfile")))
    hadolint = hadolint_errors(dockerfile)
    if hadolint is None:
        print("skip deploy/docker/Dockerfile: hadolint (not installed; Debian 12 does not package it)")
    else:
        report.check("deploy/docker/Dockerfile: hadolint", hadolint)
    docs_by_file, values = renderings.get("defaults", next(iter(renderings.values())))
    for what, case, expected in negative_cases(schemas, docs_by_file, values, flags, families, variables, renderer):
        errors = case()
        hit = [e for e in errors if expected in e]
        if not errors:
            problem = ["accepted: the check let a broken manifest through"]
        elif not hit:
            problem = [f"refused, but not for '{expected}':"] + errors[:5]
        else:
            problem = []
        report.check(f"refuses {what}", problem)
        if VERBOSE and hit:
            print(f"       ({hit[0]})")
    print(f"{report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
