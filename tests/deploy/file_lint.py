"""The two files that are not Kubernetes objects: the Grafana dashboard and the Dockerfile."""
import re
import shutil
import subprocess


def grafana_errors(dashboard, families):
    errs = []
    if not isinstance(dashboard, dict) or not dashboard.get("uid") or not dashboard.get("title"):
        return ["dashboard needs uid and title"]
    if not isinstance(dashboard.get("schemaVersion"), int):
        errs.append("schemaVersion must be an integer")
    exprs = [a["expr"] for a in dashboard.get("annotations", {}).get("list", []) if "expr" in a]
    ids = set()
    for p in dashboard.get("panels", []):
        if p.get("id") in ids:
            errs.append(f"panel id {p.get('id')} repeated")
        ids.add(p.get("id"))
        if p.get("type") == "row":
            continue
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in "hwxy") or g["x"] + g["w"] > 24:
            errs.append(f"panel '{p.get('title')}': gridPos must be integers h, w, x, y within 24 columns")
        if not p.get("targets"):
            errs.append(f"panel '{p.get('title')}' has no targets")
        for t in p.get("targets", []):
            exprs.append(t.get("expr", ""))
    for var in dashboard.get("templating", {}).get("list", []):
        q = var.get("query")
        if isinstance(q, dict):
            exprs.append(q.get("query", ""))
    names = set()
    for e in exprs:
        if e.count("(") != e.count(")") or e.count("{") != e.count("}") or e.count("[") != e.count("]"):
            errs.append(f"unbalanced brackets in: {e}")
        names |= set(re.findall(r"\b(bulwark_\w+)", e))
    for n in sorted(names):
        base = re.sub(r"_(bucket|sum|count)$", "", n)
        if n in families and not (families[n] == "histogram" and n != base):
            continue
        if base != n and families.get(base) == "histogram":
            continue
        errs.append(f"metric {n} is not exported by src/serve (metrics.cpp)")
    if not names:
        errs.append("the dashboard queries no bulwark metric")
    return errs


# Dockerfile.


def dockerfile_errors(text):
    errs = []
    lines, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        buf += " " + line[:-1] if line.endswith("\\") else " " + line
        if not line.endswith("\\"):
            lines.append(buf.strip())
            buf = ""
    args = {}
    for line in lines:
        m = re.match(r"ARG\s+(\w+)=(\S+)", line)
        if m:
            args[m.group(1)] = m.group(2)
    froms = [line for line in lines if line.upper().startswith("FROM ")]
    if len(froms) < 2:
        errs.append("multi-stage: at least a build stage and a runtime stage")
    for f in froms:
        image = f.split()[1]
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image)
        if not re.match(r"(docker\.io/(library/)?)?debian:(12|bookworm)([.-][\w.-]*)?(@sha256:[0-9a-f]{64})?$", image):
            errs.append(f"{f}: the base must be Debian 12 (debian:12..., no latest)")
    final = lines[lines.index(froms[-1]):] if froms else lines
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        errs.append("the runtime stage must end as a non-root USER")
    if not any(line.upper().startswith("HEALTHCHECK ") and "NONE" not in line.upper() for line in final):
        errs.append("the runtime stage has no HEALTHCHECK")
    if not any(re.search(r"\bmake deps-build\b", line) for line in lines):
        errs.append("the build stage must install the Makefile's build set (make deps-build)")
    for line in lines:
        if not line.upper().startswith("RUN "):
            if line.upper().startswith("ADD ") and "://" in line:
                errs.append(f"ADD from a URL: {line[:60]}")
            if re.match(r"(CMD|ENTRYPOINT)\s+[^\[]", line, re.I):
                errs.append(f"{line.split()[0]} must use the exec (JSON) form")
            continue
        if "apt-get install" in line:
            if "--no-install-recommends" not in line or not re.search(r"apt-get install\s+(-\w+\s+)*-y", line):
                errs.append("apt-get install needs -y --no-install-recommends")
        if "apt-get update" in line or "make deps" in line:
            if "rm -rf /var/lib/apt/lists" not in line:
                errs.append("a RUN with apt-get must remove /var/lib/apt/lists/* in the same layer")
            if not ("apt-get install" in line or "make deps" in line):
                errs.append("apt-get update alone in a RUN (stale lists in a cached layer)")
        if re.search(r"\bsudo\b", line):
            errs.append("sudo in a RUN")
    return errs


def hadolint_errors(path):
    exe = shutil.which("hadolint")
    if not exe:
        return None
    r = subprocess.run([exe, "--ignore", "DL3008", path], capture_output=True, text=True)
    return [] if r.returncode == 0 else (r.stdout + r.stderr).strip().splitlines()
