#!/usr/bin/python3
"""Fills the ${VAR} placeholders of Bulwark's manifests and prints them for `kubectl apply -f -`.

    python3 deploy/render.py [--set NAME=VALUE]... [--env] FILE... | kubectl apply -f -

Values come from --set, then (with --env) from environment variables of the same name, then from
the defaults in deploy/variables.yaml. A placeholder that is not declared there, a --set of an
undeclared name, or a required variable left without a value is an error (exit 2): nothing is
printed half-filled. `$${` writes a literal `${`.
"""
import argparse
import os
import re
import sys

import yaml

DEPLOY_DIR = os.path.dirname(os.path.abspath(__file__))
VARIABLES_FILE = os.path.join(DEPLOY_DIR, "variables.yaml")
PLACEHOLDER = re.compile(r"\$(\$?)\{([^}]*)\}")
NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


class RenderError(Exception):
    pass


def load_variables(path=VARIABLES_FILE):
    """{name: {"default"?, "sample"?, "description"}} from variables.yaml, checked."""
    with open(path) as f:
        doc = yaml.safe_load(f)
    out = doc.get("variables") if isinstance(doc, dict) else None
    if not isinstance(out, dict) or not out:
        raise RenderError(f"{path}: needs a non-empty 'variables' map")
    for name, spec in out.items():
        if not NAME.match(name):
            raise RenderError(f"{path}: variable name '{name}' is not UPPER_SNAKE_CASE")
        if not isinstance(spec, dict) or not isinstance(spec.get("description"), str):
            raise RenderError(f"{path}: {name} needs a description")
        unknown = set(spec) - {"default", "sample", "description"}
        if unknown:
            raise RenderError(f"{path}: {name}: unknown keys {sorted(unknown)}")
        if ("default" in spec) == ("sample" in spec):
            raise RenderError(f"{path}: {name} needs exactly one of default (optional) or sample (required)")
        for key in ("default", "sample"):
            if key in spec and not isinstance(spec[key], str):
                raise RenderError(f"{path}: {name}.{key} must be a string (quote numbers)")
    return out


def placeholders(text):
    """The names ${NAME} in `text` (escaped $${...} excluded)."""
    return {m.group(2) for m in PLACEHOLDER.finditer(text) if not m.group(1)}


def substitute(text, values, where):
    def one(m):
        if m.group(1):
            return "${" + m.group(2) + "}"
        name = m.group(2)
        if not NAME.match(name):
            raise RenderError(f"{where}: malformed placeholder '${{{name}}}'")
        if name not in values:
            raise RenderError(f"{where}: unknown placeholder ${{{name}}} (declare it in deploy/variables.yaml)")
        return values[name]

    return PLACEHOLDER.sub(one, text)


def resolve(variables, given, use_samples=False, needed=None):
    """The value of each variable in `needed` (default: all): `given`, else the default (which may
    name other variables), else the sample when `use_samples` (tests), else an error naming the
    required variable. Required variables no file uses need no value."""
    unknown = set(given) - set(variables)
    if unknown:
        raise RenderError(f"unknown variables {sorted(unknown)} (see deploy/variables.yaml)")
    values = {}

    def value(name, chain):
        if name in values:
            return values[name]
        if name in chain:
            raise RenderError("variables refer to each other in a loop: " + " -> ".join(chain + [name]))
        spec = variables.get(name)
        if spec is None:
            raise RenderError(f"unknown placeholder ${{{name}}} in the default of {chain[-1]}")
        if name in given:
            text = given[name]
        elif "default" in spec:
            text = spec["default"]
        elif use_samples:
            text = spec["sample"]
        else:
            raise RenderError(f"{name} is required: {spec['description']} (--set {name}=...)")
        for ref in placeholders(text):
            value(ref, chain + [name])
        values[name] = substitute(text, values, f"variable {name}")
        return values[name]

    for name in sorted(variables if needed is None else needed):
        if name in variables:  # an undeclared one is reported with its file by substitute()
            value(name, [])
    return values


def render_file(path, values):
    with open(path) as f:
        return substitute(f.read(), values, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", metavar="FILE")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--env", action="store_true", help="take values from environment variables of the same names")
    args = ap.parse_args(argv)
    try:
        variables = load_variables()
        given = {}
        if args.env:
            given.update({k: v for k, v in os.environ.items() if k in variables})
        for s in args.set:
            name, eq, val = s.partition("=")
            if not eq:
                raise RenderError(f"--set {s}: expected NAME=VALUE")
            given[name] = val
        texts = {}
        for p in args.files:
            with open(p) as f:
                texts[p] = f.read()
        needed = set().union(*(placeholders(t) for t in texts.values()))
        values = resolve(variables, given, needed=needed)
        out = [substitute(t, values, p).strip("\n") for p, t in texts.items()]
    except (RenderError, OSError, yaml.YAMLError) as e:
        print(f"render: {e}", file=sys.stderr)
        return 2
    print("\n---\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
