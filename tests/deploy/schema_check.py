"""Documents against the upstream schemas in deploy/schemas/ (index.json maps apiVersion/kind to a file)."""
import json
import os

import jsonschema

SCHEMAS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "deploy", "schemas")


def strictify(node):
    """additionalProperties: false wherever a schema lists its properties and does not say
    otherwise: the API server prunes (or, strict, rejects) unknown fields; a validator that lets
    them through passes a typo."""
    if isinstance(node, list):
        for x in node:
            strictify(x)
        return
    if not isinstance(node, dict):
        return
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        node["additionalProperties"] = False
    for k, v in node.items():
        if k in ("enum", "default", "example", "x-kubernetes-validations"):
            continue
        strictify(v)


class Schemas:
    def __init__(self):
        with open(os.path.join(SCHEMAS, "index.json")) as f:
            index = json.load(f)
        self.entries = {(e["apiVersion"], e["kind"]): e for e in index["kinds"]}
        self.files = {}
        self.validators = {}
        meta = index["objectMeta"]
        self.object_meta = self._validator(meta["file"], meta["definition"])

    def _load(self, name):
        if name not in self.files:
            with open(os.path.join(SCHEMAS, name)) as f:
                schema = json.load(f)
            strictify(schema)
            self.files[name] = schema
        return self.files[name]

    def _validator(self, file, definition=None):
        key = (file, definition)
        if key not in self.validators:
            schema = self._load(file)
            if definition:
                schema = {"definitions": schema["definitions"], "allOf": [{"$ref": "#/definitions/" + definition}]}
            cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
            self.validators[key] = cls(schema)
        return self.validators[key]

    def errors(self, doc):
        if not isinstance(doc, dict):
            return ["a document must be a mapping"]
        gvk = (doc.get("apiVersion"), doc.get("kind"))
        entry = self.entries.get(gvk)
        if entry is None:
            return [f"no schema for apiVersion {gvk[0]} kind {gvk[1]} under deploy/schemas/ (index.json)"]
        out = [self._format(e) for e in self._validator(entry["file"], entry.get("definition")).iter_errors(doc)]
        if "definition" not in entry:  # a CRD: its schema leaves metadata open
            meta = doc.get("metadata")
            out += ["metadata: " + self._format(e) for e in self.object_meta.iter_errors(meta)] if meta else [
                "metadata is required"]
        return out

    @staticmethod
    def _format(e):
        path = ".".join(str(p) for p in e.absolute_path) or "(document)"
        return f"{path}: {e.message[:300]}"
