"""deploy/'s templates rendered by the product's one renderer, `bulwark deploy render` (the binary
given to validate_manifests.py), for the offline checks. Nothing here renders: it runs the binary."""
import os
import re
import subprocess
import tempfile

import yaml

DEPLOY = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "deploy")
VARIABLES_FILE = os.path.join(DEPLOY, "variables.yaml")
PLACEHOLDER = re.compile(r"\$(\$?)\{([^}]*)\}")


class RenderError(Exception):
    pass


class Renderer:
    def __init__(self, bulwark):
        if not os.access(bulwark, os.X_OK):
            raise RenderError(f"{bulwark}: not an executable bulwark binary (pass build/bulwark)")
        self.bulwark = bulwark

    def run(self, files, given, samples=True, variables=VARIABLES_FILE):
        cmd = [self.bulwark, "deploy", "render", "--variables", variables]
        if samples:
            cmd.append("--samples")
        for name, value in sorted(given.items()):
            cmd += ["--set", f"{name}={value}"]
        r = subprocess.run(cmd + list(files), capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RenderError(r.stderr.strip().removeprefix("error: "))
        return r.stdout

    def values(self, given):
        """Every variable's value as the renderer resolves it (given, defaults naming others, samples)."""
        names = sorted(load_variables())
        marker = "@@bulwark-value@@"
        with tempfile.TemporaryDirectory() as d:
            probe = os.path.join(d, "values.txt")
            with open(probe, "w") as f:
                f.write("".join(f"{marker}{n}={{${{{n}}}}}\n" for n in names))
            text = self.run([probe], given)
        out = {}
        for chunk in text.split(marker)[1:]:
            name, _, rest = chunk.partition("={")
            out[name] = rest[:rest.rindex("}")]
        if sorted(out) != names:
            raise RenderError(f"value probe read {sorted(out)}, expected {names}")
        return out


def load_variables(path=VARIABLES_FILE):
    """The declarations (the renderer checks them; this only reads the names and defaults)."""
    with open(path) as f:
        doc = yaml.safe_load(f)
    return doc["variables"]


def placeholders(text):
    """The names ${NAME} in `text` (escaped $${...} excluded): what each file uses."""
    return {m.group(2) for m in PLACEHOLDER.finditer(text) if not m.group(1)}
