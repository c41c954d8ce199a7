"""Checks across rendered documents: pod security, `bulwark` command lines against the CLI, the jobs
against the guard's runner, guard.yaml against the policy, the tokens file, names objects give each other."""
import os
import re
import shlex

import yaml

from code_facts import cli_flags, http_routes, policy_keys, runner_harden_flags


def pod_specs(doc):
    """(pod-level dict, [containers], where) for every pod-like spec in a document."""
    out = []

    def walk(node, path):
        if isinstance(node, dict):
            if isinstance(node.get("containers"), list):
                out.append((node, node["containers"] + node.get("initContainers", []), ".".join(path)))
            for k, v in node.items():
                walk(v, path + [str(k)])
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, path + [str(i)])

    walk(doc, [])
    if doc.get("kind") == "InferenceService":
        pred = doc["spec"]["predictor"]
        out.append((pred, [dict(pred["model"], name="model")], "spec.predictor"))
    return out


def security_errors(doc, values):
    errs = []
    kind = doc.get("kind")
    for pod, containers, where in pod_specs(doc):
        psc = pod.get("securityContext", {})
        if kind != "ServingRuntime":  # its pod-level fields live in the InferenceService
            if pod.get("automountServiceAccountToken") is not False:
                errs.append(f"{where}: automountServiceAccountToken must be false (no pod here needs the API yet)")
            if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
                errs.append(f"{where}: host namespaces")
            for v in pod.get("volumes", []):
                if "hostPath" in v:
                    errs.append(f"{where}: hostPath volume {v.get('name')}")
        for c in containers:
            csc = c.get("securityContext", {})
            name = f"{where}.{c.get('name')}"
            if kind == "InferenceService":  # the container is the runtime's, merged: resources only
                csc = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                       "capabilities": {"drop": ["ALL"]}}
            if "image" in c and c["image"] != values["IMAGE"]:
                errs.append(f"{name}: image {c['image']} is not ${{IMAGE}}")
            if str(c.get("image", "")).endswith(":latest"):
                errs.append(f"{name}: image tag latest")
            if not (csc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
                errs.append(f"{name}: runAsNonRoot is not true (container or pod)")
            if 0 in (csc.get("runAsUser"), psc.get("runAsUser")):
                errs.append(f"{name}: runAsUser 0")
            if csc.get("allowPrivilegeEscalation") is not False:
                errs.append(f"{name}: allowPrivilegeEscalation must be false")
            if csc.get("readOnlyRootFilesystem") is not True:
                errs.append(f"{name}: readOnlyRootFilesystem must be true")
            if csc.get("privileged"):
                errs.append(f"{name}: privileged")
            caps = csc.get("capabilities", {})
            if "ALL" not in caps.get("drop", []) or caps.get("add"):
                errs.append(f"{name}: capabilities must drop ALL and add none")
            seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
            if seccomp != "RuntimeDefault":
                errs.append(f"{name}: seccompProfile RuntimeDefault (container or pod)")
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(part, {}):
                        errs.append(f"{name}: resources.{part}.{r} missing")
            secret_volumes = {v["name"] for v in pod.get("volumes", []) if "secret" in v}
            for m in c.get("volumeMounts", []):
                if m["name"] in secret_volumes and not m.get("readOnly"):
                    errs.append(f"{name}: secret volume {m['name']} mounted writable")
    if kind == "TrainJob":
        res = doc["spec"]["trainer"].get("resourcesPerNode", {})
        for part in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(part, {}):
                    errs.append(f"spec.trainer.resourcesPerNode.{part}.{r} missing")
    return errs


# bulwark command lines.

SHELL_OPERATORS = {"&&", "||", ";", "|", "&"}
REDIRECTS = {">", ">>", "<", "2>", "2>>", "&>"}


def bulwark_invocations(container):
    """Each argv (after the program name) the container runs bulwark with."""
    command, args = container.get("command"), [str(a) for a in container.get("args", [])]
    if not command:
        return [args] if args else []  # the entrypoint is bulwark; no args: given later (TrainJob)
    if command[0].endswith("/bulwark") or command[0] == "bulwark":
        return [command[1:] + args]
    if command[:2] in (["/bin/sh", "-c"], ["sh", "-c"], ["/bin/bash", "-c"]):
        out = []
        for script in (command[2:] + args)[:1]:
            current = None
            tokens = shlex.split(script)
            skip = False
            for tok in tokens:
                if skip:
                    skip = False
                    continue
                if tok in SHELL_OPERATORS:
                    current = None
                elif tok in REDIRECTS:
                    skip = True
                elif current is None:
                    if tok == "exec":
                        continue
                    if tok.endswith("/bulwark") or tok == "bulwark":
                        current = []
                        out.append(current)
                    else:
                        current = False  # another program
                elif current is not False:
                    current.append(tok)
        return out
    return []


def parse_argv(argv, flags):
    """(subcommand, {flag: value}, [errors]) for a bulwark argv."""
    errs, seen, sub = [], {}, None
    i = 0
    while i < len(argv):
        tok = argv[i]
        i += 1
        if not tok.startswith("--"):
            if sub is None and tok in flags and tok:
                sub = tok
                continue
            errs.append(f"unexpected argument '{tok}'" + ("" if sub else " (no such subcommand)"))
            continue
        name, eq, value = tok.partition("=")
        known = flags.get(sub or "", {})
        if name in known:
            takes = known[name]
        elif name in flags[""]:
            takes = flags[""][name]
        else:
            errs.append(f"{name} is not a flag of bulwark {sub or '(global)'}")
            continue
        if takes and not eq:
            if i >= len(argv):
                errs.append(f"{name} needs a value")
                break
            value = argv[i]
            i += 1
        elif not takes and eq:
            errs.append(f"{name} takes no value")
        seen[name] = value
    if sub is None:
        errs.append("no subcommand")
    return sub, seen, errs


def under_mount(path, container, extra=()):
    mounts = [m["mountPath"] for m in container.get("volumeMounts", [])] + list(extra)
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts)


def bulwark_errors(docs_by_file, flags):
    """Flags, runner parity, guard.yaml, paths and probes across all rendered documents."""
    errs = []
    routes = http_routes()
    isvc_args = [a for docs in docs_by_file.values() for d in docs if d.get("kind") == "InferenceService"
                 for a in d["spec"]["predictor"]["model"].get("args", [])]
    harden_lines = []
    config_maps = {d["metadata"]["name"]: d for docs in docs_by_file.values() for d in docs
                   if d.get("kind") == "ConfigMap"}
    for path, docs in docs_by_file.items():
        for doc in docs:
            for pod, containers, where in pod_specs(doc):
                for c in containers:
                    name = f"{path}: {doc.get('kind')} {where}.{c.get('name')}"
                    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                        get = c.get(probe, {}).get("httpGet")
                        if get and get["path"] not in routes:
                            errs.append(f"{name}: {probe} path {get['path']} is no route of the server")
                    if "image" not in c:
                        continue
                    for argv in bulwark_invocations(c):
                        if doc.get("kind") == "ServingRuntime":
                            argv = argv + isvc_args  # KServe appends the InferenceService's args
                        sub, seen, e = parse_argv(argv, flags)
                        errs += [f"{name}: {x}" for x in e]
                        if sub == "harden":
                            harden_lines.append((name, argv, set(seen)))
                        for flag in ("--tokens", "--config", "--calibration"):
                            if flag in seen and not under_mount(seen[flag], c):
                                errs.append(f"{name}: {flag} {seen[flag]} is on no mounted volume")
                        if sub == "serve" and seen.get("--registry") != "/mnt/models":
                            errs.append(f"{name}: serve --registry must be /mnt/models, where KServe mounts storageUri")
                        if sub == "guard":
                            cm = next((v["configMap"]["name"] for v in pod.get("volumes", []) if "configMap" in v), None)
                            errs += [f"{name}: {x}" for x in guard_config_errors(config_maps.get(cm), c, pod)]
        for doc in docs:
            if doc.get("kind") == "TrainJob":  # its command runs in the TrainingRuntime's container
                for argv in bulwark_invocations(doc["spec"]["trainer"]):
                    sub, seen, e = parse_argv(argv, flags)
                    name = f"{path}: TrainJob spec.trainer"
                    errs += [f"{name}: {x}" for x in e]
                    if sub == "harden":
                        harden_lines.append((name, argv, set(seen)))
    errs += harden_parity_errors(harden_lines)
    return errs


def harden_parity_errors(lines):
    errs = []
    if len(lines) < 2:
        return [f"expected the TrainJob and the PyTorchJob to run bulwark harden, found {[n for n, _, _ in lines]}"]
    runner = runner_harden_flags()
    for name, argv, used in lines:
        missing = runner - used - {"--limit"}  # the runner adds --limit only for a limit above 0
        extra = used - runner - {"--threads"}
        if missing:
            errs.append(f"{name}: the guard's runner passes {sorted(missing)}, the job does not")
        if extra:
            errs.append(f"{name}: flags the guard's runner does not pass: {sorted(extra)}")
    first = lines[0][1]
    for name, argv, _ in lines[1:]:
        if argv != first:
            errs.append(f"{name}: runs another command than {lines[0][0]}")
    return errs


def guard_config_errors(cm, container, pod):
    if cm is None:
        return ["bulwark guard without its ConfigMap in deploy/"]
    errs = []
    files = cm.get("data", {})
    conf_path = next((a.split("=", 1)[1] for a in container.get("args", []) if a.startswith("--config=")), "")
    conf = yaml.safe_load(files.get(os.path.basename(conf_path), "")) or {}
    if set(conf) - {"serve", "policy"}:
        errs.append(f"guard.yaml: unknown top-level keys {sorted(set(conf) - {'serve', 'policy'})}")
    serve_flags = cli_flags()["serve"]
    for key, value in (conf.get("serve") or {}).items():
        if "--" + key not in serve_flags:
            errs.append(f"guard.yaml: serve.{key} is no serve flag")
    serve = conf.get("serve") or {}
    models = serve.get("model") or {}
    production = [m for m in models.values() if re.fullmatch(r"registry:[\w.-]+@production", str(m))]
    if len(production) != 1:
        errs.append("guard.yaml: serve.model must hold exactly one NAME: registry:NAME@production")
    sections, scalars, enums = policy_keys()
    policy = conf.get("policy") or {}
    for sec, body in policy.items():
        if sec in scalars:
            continue
        if sec not in sections:
            errs.append(f"guard.yaml: policy.{sec} is no policy section")
            continue
        for key in body or {}:
            if key not in sections[sec]:
                errs.append(f"guard.yaml: policy.{sec}.{key} is no key policy.cpp reads")
    for dotted, allowed in enums.items():
        sec, key = dotted.split(".")
        value = (policy.get(sec) or {}).get(key)
        if value is not None and value not in allowed:
            errs.append(f"guard.yaml: policy.{dotted} '{value}' is refused by policy.cpp (accepts {sorted(allowed)})")
    init_outputs = [c["command"][-1] for c in pod.get("initContainers", []) if c.get("command")]
    paths = [serve.get(k) for k in ("registry", "tokens", "events")] + [(policy.get("hardening") or {}).get("key")]
    for p in filter(None, paths):
        if not under_mount(str(p), container):
            errs.append(f"guard.yaml: {p} is on no volume the guard mounts")
    key = (policy.get("hardening") or {}).get("key")
    if key and key not in init_outputs:
        errs.append(f"guard.yaml: hardening.key {key} is not what the init container installs ({init_outputs})")
    return errs


def reference_errors(docs_by_file, values):
    """Names one object gives another: each must exist in deploy/ (or be created as the docs say)."""
    errs = []
    docs = [(p, d) for p, ds in docs_by_file.items() for d in ds]

    def names(kind):
        return {d["metadata"]["name"] for _, d in docs if d.get("kind") == kind}

    def need(where, what, name, kind, extra=()):
        if name not in names(kind) | set(extra):
            errs.append(f"{where}: {what} '{name}' is no {kind} in deploy/")

    runtimes = {d["metadata"]["name"]: d for _, d in docs if d.get("kind") == "ServingRuntime"}
    service_accounts = names("ServiceAccount")
    for path, d in docs:
        kind, meta = d.get("kind"), d.get("metadata", {})
        where = f"{path}: {kind} {meta.get('name')}"
        if kind != "Namespace" and meta.get("namespace") != values["NAMESPACE"]:
            errs.append(f"{where}: namespace must be ${{NAMESPACE}}")
        if kind == "InferenceService":
            model = d["spec"]["predictor"]["model"]
            need(where, "runtime", model["runtime"], "ServingRuntime")
            formats = [f["name"] for f in runtimes.get(model["runtime"], {}).get("spec", {}).get("supportedModelFormats", [])]
            if model["modelFormat"]["name"] not in formats:
                errs.append(f"{where}: modelFormat {model['modelFormat']['name']} is not one its runtime supports")
            need(where, "serviceAccountName", d["spec"]["predictor"].get("serviceAccountName"), "ServiceAccount")
        if kind == "TrainJob":
            need(where, "runtimeRef", d["spec"]["runtimeRef"]["name"], d["spec"]["runtimeRef"]["kind"])
        if kind == "RoleBinding":
            need(where, "roleRef", d["roleRef"]["name"], d["roleRef"]["kind"])
            for sub in d["subjects"]:
                need(where, "subject", sub["name"], sub["kind"])
        if kind == "Deployment":
            sel, labels = d["spec"]["selector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"]
            if any(labels.get(k) != v for k, v in sel.items()):
                errs.append(f"{where}: selector {sel} does not match the pod template's labels")
        if kind == "Service":
            sel = d["spec"].get("selector", {})
            if "serving.kserve.io/inferenceservice" in sel:
                need(where, "selector serving.kserve.io/inferenceservice",
                     sel["serving.kserve.io/inferenceservice"], "InferenceService")
            else:
                pods = [x["spec"]["template"]["metadata"]["labels"] for _, x in docs if x.get("kind") == "Deployment"]
                if not any(all(lab.get(k) == v for k, v in sel.items()) for lab in pods):
                    errs.append(f"{where}: selector {sel} matches no pod template in deploy/")
        if kind == "ServiceMonitor":
            sel = d["spec"]["selector"]["matchLabels"]
            targets = [x for _, x in docs if x.get("kind") == "Service"
                       and all(x["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
            if not targets:
                errs.append(f"{where}: selector {sel} matches no Service in deploy/")
            for t in targets:
                ports = {p.get("name") for p in t["spec"]["ports"]}
                for ep in d["spec"]["endpoints"]:
                    if ep["port"] not in ports:
                        errs.append(f"{where}: Service {t['metadata']['name']} has no port named {ep['port']}")
        for pod, containers, pwhere in pod_specs(d):
            if pod.get("serviceAccountName") and pod["serviceAccountName"] not in service_accounts:
                errs.append(f"{where} {pwhere}: serviceAccountName {pod['serviceAccountName']} is no ServiceAccount")
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            if kind == "InferenceService":
                volumes.update({v["name"]: v for r in runtimes.values() for v in r["spec"].get("volumes", [])})
            for v in volumes.values():
                if "configMap" in v:
                    need(where, "configMap", v["configMap"]["name"], "ConfigMap")
                if "secret" in v:  # the signing key is created with kubectl (docs/kubernetes.md)
                    need(where, "secret", v["secret"]["secretName"], "Secret", [values["SIGNING_KEY_SECRET"]])
                if "persistentVolumeClaim" in v:
                    need(where, "claim", v["persistentVolumeClaim"]["claimName"], "PersistentVolumeClaim")
            for c in containers:
                for m in c.get("volumeMounts", []):
                    if m["name"] not in volumes:
                        errs.append(f"{where} {pwhere}.{c.get('name')}: mounts volume {m['name']}, which the pod lacks")
                ports = {p["containerPort"] for p in c.get("ports", [])}
                names_ = {p.get("name") for p in c.get("ports", [])}
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    port = c.get(probe, {}).get("httpGet", {}).get("port")
                    if port is not None and port not in ports | names_:
                        errs.append(f"{where} {pwhere}.{c.get('name')}: {probe} port {port} is no container port")
    return errs


def tokens_errors(docs_by_file):
    errs = []
    for path, docs in docs_by_file.items():
        for d in docs:
            if d.get("kind") != "Secret" or "tokens.yaml" not in d.get("stringData", {}):
                continue
            tokens = (yaml.safe_load(d["stringData"]["tokens.yaml"]) or {}).get("tokens") or []
            if not tokens:
                errs.append(f"{path}: tokens.yaml has no tokens")
            for t in tokens:
                if not re.fullmatch(r"[0-9a-f]{64}", str(t.get("sha256", ""))):
                    errs.append(f"{path}: token {t.get('id')}: sha256 is not 64 hex digits")
                if not t.get("roles") or set(t["roles"]) - {"infer", "feedback", "admin"}:
                    errs.append(f"{path}: token {t.get('id')}: roles must be from infer, feedback, admin")
    return errs
