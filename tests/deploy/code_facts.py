"""What the code defines, read from src/ so that the deploy checks follow the code: the CLI's flags,
the flags the guard's subprocess runner passes, the policy keys, the metric families, the routes."""
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def src(path):
    with open(os.path.join(REPO, path)) as f:
        return f.read()


# What the code defines (read from the sources, so the checks follow the code).


def function_body(text, signature):
    start = text.index(signature)
    end = text.index("\n}\n", start)
    return text[start:end]


def flags_in(text):
    """{"--name": takes_value} for every add_option/add_flag in `text`."""
    out = {}
    for kind, name in re.findall(r'add_(option|flag)\(\s*"(--[a-z0-9-]+)"', text):
        out[name] = kind == "option"
    return out


def command_flags(path):
    """A command's own flags, plus the shared groups it adds (cli/data_flags.cpp's --data group and
    --augment group)."""
    text = src(path)
    flags = flags_in(text)
    data_flags = src("src/cli/data_flags.cpp")
    if "add_data_options(" in text:
        flags.update(flags_in(function_body(data_flags, "void add_data_options(")))
    if "add_augment_options(" in text:
        flags.update(flags_in(function_body(data_flags, "void add_augment_options(")))
    return flags


def cli_flags():
    serve = flags_in(function_body(src("src/cli/cmd_serve.cpp"), "void add_serve_options("))
    registry_option = flags_in(src("src/cli/run_record.cpp"))
    return {
        "": flags_in(src("src/cli/main.cpp")),  # global
        "serve": serve,
        "guard": serve,
        "harden": {**command_flags("src/cli/cmd_harden.cpp"), **registry_option},
        "train": {**command_flags("src/cli/cmd_train.cpp"), **registry_option},
    }


def runner_harden_flags():
    """The flags the guard's runners pass to `bulwark harden` (harden_argv: the subprocess runner
    executes them, the Kubernetes runner fills the job templates' variables from them)."""
    body = function_body(src("src/control/runner.cpp"), "std::vector<std::string> harden_argv(")
    return set(re.findall(r'"(--[a-z0-9-]+)"', body))


def policy_keys():
    text = src("src/control/policy.cpp")
    sections = {}
    for var, name in re.findall(r'Section (\w+)\(node, "(\w+)"', text):
        sections[name] = set(re.findall(r'\b' + var + r'\.read\("(\w+)"', text))
    scalars = set(re.findall(r'node\["(\w+)"\]', text)) - set(sections)
    enums = {}
    for key in ("runner", "method"):
        enums["hardening." + key] = set(re.findall(r'hardening\.' + key + r' == "([\w-]+)"', text))
    return sections, scalars, enums


def metric_families():
    """{name: type} of every family src/serve/metrics.cpp declares."""
    return dict(re.findall(r'family\("(bulwark_\w+)",\s*"(\w+)"', src("src/serve/metrics.cpp")))


def http_routes():
    return set(re.findall(r's\.Get\("(/[^"]*)"', src("src/serve/http_frontend.cpp")))
