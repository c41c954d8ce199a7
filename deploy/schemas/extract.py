#!/usr/bin/python3
"""Builds deploy/schemas/ from upstream files, once, when a version is bumped (README.md here).

    /usr/bin/python3 deploy/schemas/extract.py UPSTREAM_DIR

UPSTREAM_DIR holds the upstream files under the names in SOURCES (each copied verbatim from its
repository at the tag README.md names). For every CRD the served version's openAPIV3Schema is kept;
for Kubernetes the strict definitions the manifests need, with everything they reference.
Two reductions keep the files small without changing what validates:
  - `description` texts are dropped (documentation, not constraints);
  - a CRD subtree of schema that occurs more than once (KServe inlines PodSpec a dozen times) is
    stored once under `definitions` and referenced with `$ref`.
index.json maps each apiVersion/kind to its file (and definition), which the validator reads.
"""
import hashlib
import json
import os
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))

# (file in UPSTREAM_DIR, output name): CRDs, one served version each.
CRDS = [
    ("serving.kserve.io_inferenceservices.yaml", "kserve-inferenceservice-v1beta1.json"),
    ("serving.kserve.io_servingruntimes.yaml", "kserve-servingruntime-v1alpha1.json"),
    ("trainer.kubeflow.org_trainjobs.yaml", "trainer-trainjob-v1alpha1.json"),
    ("trainer.kubeflow.org_trainingruntimes.yaml", "trainer-trainingruntime-v1alpha1.json"),
    ("kubeflow.org_pytorchjobs.yaml", "training-operator-pytorchjob-v1.json"),
    ("monitoring.coreos.com_servicemonitors.yaml", "prometheus-operator-servicemonitor-v1.json"),
]

# Kubernetes kinds the manifests use, from yannh/kubernetes-json-schema's strict _definitions.json.
K8S_DEFINITIONS = "_definitions.json"
K8S_OUT = "kubernetes-v1.31.0-strict.json"
K8S_KINDS = [
    "io.k8s.api.apps.v1.Deployment",
    "io.k8s.api.core.v1.ConfigMap",
    "io.k8s.api.core.v1.Namespace",
    "io.k8s.api.core.v1.PersistentVolumeClaim",
    "io.k8s.api.core.v1.Pod",
    "io.k8s.api.core.v1.Secret",
    "io.k8s.api.core.v1.Service",
    "io.k8s.api.core.v1.ServiceAccount",
    "io.k8s.api.rbac.v1.Role",
    "io.k8s.api.rbac.v1.RoleBinding",
]
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"  # the validator checks CRD metadata with it

# Keys whose value is a schema, and keys whose value maps names to schemas.
SCHEMA_KEYS = ("items", "additionalProperties", "not")
SCHEMA_LIST_KEYS = ("allOf", "anyOf", "oneOf")
SCHEMA_MAP_KEYS = ("properties", "patternProperties")
HOIST_MIN_CHARS = 400


def canonical(node):
    return json.dumps(node, sort_keys=True, separators=(",", ":"))


def strip_descriptions(node):
    """Drops description texts from schema nodes; property *names* called description stay."""
    if isinstance(node, list):
        return [strip_descriptions(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k == "description" and isinstance(v, str):
            continue
        if k in SCHEMA_MAP_KEYS and isinstance(v, dict):
            out[k] = {name: strip_descriptions(s) for name, s in v.items()}
        elif k in SCHEMA_KEYS or k in SCHEMA_LIST_KEYS:
            out[k] = strip_descriptions(v)
        else:
            out[k] = v  # enum, default, x-kubernetes-validations...: data, kept as it is
    return out


def schema_children(node):
    """The sub-schemas of a schema node, as (container, key) pairs that can be replaced."""
    for k in SCHEMA_KEYS:
        v = node.get(k)
        if isinstance(v, dict):
            yield node, k
        elif k == "items" and isinstance(v, list):
            for i in range(len(v)):
                yield v, i
    for k in SCHEMA_LIST_KEYS:
        for i in range(len(node.get(k, []))):
            yield node[k], i
    for k in SCHEMA_MAP_KEYS:
        for name in node.get(k, {}) or {}:
            yield node[k], name


def count_subschemas(node, counts):
    counts[canonical(node)] = counts.get(canonical(node), 0) + 1
    for container, key in schema_children(node):
        count_subschemas(container[key], counts)


def hoist_repeats(root):
    """Stores each repeated sub-schema once under definitions; equivalent for validation."""
    counts = {}
    count_subschemas(root, counts)
    definitions = {}

    def rebuild(node):
        node = json.loads(json.dumps(node))
        for container, key in list(schema_children(node)):
            child = container[key]
            text = canonical(child)
            if counts.get(text, 0) > 1 and len(text) >= HOIST_MIN_CHARS:
                name = "s" + hashlib.sha256(text.encode()).hexdigest()[:12]
                if name not in definitions:
                    definitions[name] = None  # reserve before recursing
                    definitions[name] = rebuild(child)
                container[key] = {"$ref": "#/definitions/" + name}
            else:
                container[key] = rebuild(child)
        return node

    out = rebuild(root)
    if definitions:
        out["definitions"] = dict(sorted(definitions.items()))
    return out


def write_json(name, data):
    with open(os.path.join(HERE, name), "w") as f:
        f.write(json.dumps(data, sort_keys=True, separators=(",", ":")))
        f.write("\n")


def extract_crd(path, out_name):
    with open(path) as f:
        crd = yaml.safe_load(f)
    spec = crd["spec"]
    served = [v for v in spec["versions"] if v.get("served") and v.get("storage")]
    if len(served) != 1:
        sys.exit(f"{path}: expected one served storage version, got {[v['name'] for v in spec['versions']]}")
    version = served[0]
    schema = hoist_repeats(strip_descriptions(version["schema"]["openAPIV3Schema"]))
    schema["$comment"] = f"openAPIV3Schema of {spec['names']['kind']} {spec['group']}/{version['name']}"
    write_json(out_name, schema)
    return {"apiVersion": f"{spec['group']}/{version['name']}", "kind": spec["names"]["kind"], "file": out_name}


def references(node, out):
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            out.add(ref[len("#/definitions/"):])
        for v in node.values():
            references(v, out)
    elif isinstance(node, list):
        for v in node:
            references(v, out)


def extract_kubernetes(path):
    with open(path) as f:
        all_defs = json.load(f)["definitions"]
    keep, todo = set(), list(K8S_KINDS) + [OBJECT_META]
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        found = set()
        references(all_defs[name], found)
        todo.extend(found - keep)
    defs = {name: strip_descriptions(all_defs[name]) for name in sorted(keep)}
    write_json(K8S_OUT, {"$comment": "strict Kubernetes v1.31.0 definitions (subset)", "definitions": defs})
    entries = []
    for name in K8S_KINDS:
        gvk = all_defs[name]["x-kubernetes-group-version-kind"][0]
        api_version = gvk["version"] if not gvk["group"] else f"{gvk['group']}/{gvk['version']}"
        entries.append({"apiVersion": api_version, "kind": gvk["kind"], "file": K8S_OUT, "definition": name})
    return entries


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    upstream = sys.argv[1]
    index = [extract_crd(os.path.join(upstream, src), out) for src, out in CRDS]
    index += extract_kubernetes(os.path.join(upstream, K8S_DEFINITIONS))
    write_json("index.json", {"objectMeta": {"file": K8S_OUT, "definition": OBJECT_META},
                              "kinds": sorted(index, key=lambda e: (e["apiVersion"], e["kind"]))})
    for e in index:
        print(f"{e['apiVersion']:<34} {e['kind']:<22} {e['file']}")


if __name__ == "__main__":
    main()
