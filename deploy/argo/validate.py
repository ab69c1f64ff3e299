#!/usr/bin/env python3
"""Validate sg2's Argo Workflows manifests and list the sg2 command lines in them.

    python3 deploy/argo/validate.py [--json] [FILE.yaml ...]     (default: every *.yaml beside this script)

Checks, per YAML document:
  * the schema: Argo's own models (the `hera` package, generated from Argo's OpenAPI spec) must accept the document,
    and every key must be a field of those models (pydantic would otherwise drop misspelt keys silently);
  * the references `argo lint` would catch: entrypoint, step and task templates, DAG dependencies (and no cycles),
    `{{workflow.parameters.X}}` / `{{inputs.parameters.X}}` names, arguments a called template needs, volume mounts;
  * this project's rules: every container states its resource requests, and the sg2 image runs GPU steps with a
    GPU limit.
Every `sg2 ...` command line (in script sources or container command/args) is printed with its template
placeholders replaced by the workflow's default values, split shell-style, for sg2's own parser to check.
Exit status 1 with one line per problem (FILE: where: what) when anything is wrong.
"""

import json
import re
import shlex
import sys
from pathlib import Path

try:
    import yaml
    from hera.workflows import models as argo
    from pydantic import BaseModel, ValidationError
except ImportError as e:  # pragma: no cover - depends on the environment
    sys.exit(f"error: {e.name} is missing: run scripts/setup.sh (it installs hera and pyyaml)")

KINDS = {
    "Workflow": argo.Workflow,
    "WorkflowTemplate": argo.WorkflowTemplate,
    "ClusterWorkflowTemplate": argo.ClusterWorkflowTemplate,
    "CronWorkflow": argo.CronWorkflow,
}
PLACEHOLDER = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
# Globals Argo fills in itself.
BUILTINS = re.compile(r"^(workflow\.(name|namespace|uid|serviceAccountName|creationTimestamp.*|duration|status)"
                      r"|pod\.name|retries|node\.name|item(\..*)?|steps\.name|tasks\.name|inputs\.artifacts\..*)$")


def unknown_keys(model, raw, path):
    """Keys in `raw` that no field of `model` (by alias or name) accepts, as dotted paths."""
    if isinstance(model, BaseModel) and isinstance(raw, dict):
        fields = type(model).model_fields
        if set(fields) == {"root"}:
            return unknown_keys(model.root, raw, path)
        out = []
        for key, value in raw.items():
            name = next((n for n, f in fields.items() if key in (f.alias, n)), None)
            if name is None:
                out.append(f"{path}.{key}".lstrip("."))
            else:
                out += unknown_keys(getattr(model, name), value, f"{path}.{key}")
        return out
    if isinstance(model, BaseModel) and "root" in type(model).model_fields:
        return unknown_keys(model.root, raw, path)
    if isinstance(model, list) and isinstance(raw, list):
        return [k for i, (m, r) in enumerate(zip(model, raw)) for k in unknown_keys(m, r, f"{path}[{i}]")]
    if isinstance(model, dict) and isinstance(raw, dict):
        return [k for key in raw for k in unknown_keys(model.get(key), raw[key], f"{path}.{key}")]
    return []


def depends_names(expr):
    """Task names in a `depends` expression such as `a && (b.Succeeded || c.Failed)`."""
    words = re.findall(r"[A-Za-z0-9_-]+(?:\.[A-Za-z]+)?", expr)
    return [w.split(".")[0] for w in words]


def has_cycle(graph):
    state = {}

    def visit(n):
        if state.get(n) == 1:
            return True
        if state.get(n) == 2:
            return False
        state[n] = 1
        found = any(visit(m) for m in graph.get(n, []))
        state[n] = 2
        return found

    return any(visit(n) for n in graph)


def substitute(text, values):
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def sg2_lines(source):
    """Command lines in a shell script whose first word is sg2, cut at the first shell operator."""
    joined = re.sub(r"\\\n", " ", source)
    out = []
    for line in joined.splitlines():
        lex = shlex.shlex(line, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        lex.commenters = "#"
        try:
            words = list(lex)
        except ValueError:
            continue
        if words and words[0] == "sg2":
            cut = next((i for i, w in enumerate(words) if set(w) <= set("|&;<>()")), len(words))
            out.append(words[:cut])
    return out


def check_document(doc, where):
    """Returns (problems, commands) for one manifest document."""
    problems, commands = [], []
    if not isinstance(doc, dict):
        return [f"{where}: not a mapping"], []
    if doc.get("apiVersion") != "argoproj.io/v1alpha1":
        problems.append(f"{where}: apiVersion is {doc.get('apiVersion')!r}, expected 'argoproj.io/v1alpha1'")
    model_cls = KINDS.get(doc.get("kind"))
    if model_cls is None:
        return problems + [f"{where}: kind {doc.get('kind')!r} is not an Argo workflow kind"], []
    try:
        model = model_cls.model_validate(doc)
    except ValidationError as e:
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"])
            problems.append(f"{where}: {loc}: {err['msg']}")
        return problems, []
    problems += [f"{where}: {k}: unknown field" for k in unknown_keys(model, doc, "")]

    spec = doc.get("spec", {})
    if doc["kind"] == "CronWorkflow":
        spec = spec.get("workflowSpec", {})
    templates = {t.get("name"): t for t in spec.get("templates", [])}
    wf_params = {p["name"]: str(p.get("value", "")) for p in spec.get("arguments", {}).get("parameters", [])}
    volumes = {v["name"] for v in spec.get("volumes", [])}
    volumes |= {v.get("metadata", {}).get("name") for v in spec.get("volumeClaimTemplates", [])}
    if spec.get("entrypoint") not in templates:
        problems.append(f"{where}: spec.entrypoint {spec.get('entrypoint')!r} is not a template")

    # Who calls which template with which arguments (to check required inputs and to fill placeholders).
    calls = []
    for t in templates.values():
        steps = [s for group in t.get("steps", []) for s in group]
        tasks = t.get("dag", {}).get("tasks", [])
        for s in steps + tasks:
            calls.append((t["name"], s))
        names = {x["name"] for x in tasks}
        graph = {}
        for x in tasks:
            deps = list(x.get("dependencies", [])) + depends_names(x.get("depends", ""))
            for d in deps:
                if d not in names:
                    problems.append(f"{where}: template {t['name']}: task {x['name']} depends on unknown task {d!r}")
            graph[x["name"]] = [d for d in deps if d in names]
        if has_cycle(graph):
            problems.append(f"{where}: template {t['name']}: the DAG has a cycle")
    caller_args = {}
    for parent, s in calls:
        target = s.get("template")
        if target not in templates:
            problems.append(f"{where}: template {parent}: {s.get('name')} calls unknown template {target!r}")
            continue
        given = {p["name"]: str(p.get("value", "")) for p in s.get("arguments", {}).get("parameters", [])}
        for p in templates[target].get("inputs", {}).get("parameters", []):
            if p["name"] not in given and "value" not in p and "default" not in p:
                problems.append(f"{where}: template {parent}: {s['name']} does not pass input {p['name']!r}")
        for name, value in given.items():
            caller_args.setdefault(target, {}).setdefault(name, value)

    for name, t in templates.items():
        inputs = {p["name"]: str(p.get("value", p.get("default", "")))
                  for p in t.get("inputs", {}).get("parameters", [])}
        inputs.update({k: v for k, v in caller_args.get(name, {}).items() if k in inputs and not inputs[k]})
        values = {f"workflow.parameters.{k}": v for k, v in wf_params.items()}
        values.update({f"inputs.parameters.{k}": v for k, v in inputs.items()})
        values.update({f"inputs.parameters.{k}": substitute(v, values) for k, v in inputs.items()})
        for ref in PLACEHOLDER.findall(json.dumps(t)):
            if ref.startswith("workflow.parameters."):
                ok = ref.split(".", 2)[2] in wf_params
            elif ref.startswith("inputs.parameters."):
                ok = ref.split(".", 2)[2] in inputs
            elif ref.startswith(("tasks.", "steps.")):
                ok = ref.split(".")[1] in {x.get("name") for _, x in calls}
            else:
                ok = bool(BUILTINS.match(ref))
            if not ok:
                problems.append(f"{where}: template {name}: unknown reference {{{{{ref}}}}}")

        body = t.get("script") or t.get("container")
        if body is None:
            continue
        for m in body.get("volumeMounts", []):
            if m.get("name") not in volumes:
                problems.append(f"{where}: template {name}: mounts unknown volume {m.get('name')!r}")
        resources = body.get("resources", {})
        if not resources.get("requests"):
            problems.append(f"{where}: template {name}: no resource requests")
        lines = []
        if "script" in t:
            lines = sg2_lines(substitute(t["script"].get("source", ""), values))
        argv = [substitute(str(a), values) for a in list(body.get("command", [])) + list(body.get("args", []))]
        if argv and Path(argv[0]).name == "sg2":
            lines.append(["sg2"] + argv[1:])
        gpu_words = {"train", "generate", "metrics", "style-mix", "interpolate"}
        for words in lines:
            commands.append({"template": name, "argv": words})
            if gpu_words & set(words[1:3]) and "nvidia.com/gpu" not in resources.get("limits", {}):
                problems.append(f"{where}: template {name}: `sg2 {words[1]}` runs without a GPU limit")
    return problems, commands


def main(argv):
    as_json = "--json" in argv
    files = [Path(a) for a in argv if a != "--json"] or sorted(Path(__file__).parent.glob("*.yaml"))
    problems, commands = [], []
    for f in files:
        try:
            docs = list(yaml.safe_load_all(f.read_text()))
        except (OSError, yaml.YAMLError) as e:
            problems.append(f"{f}: {e}".replace("\n", " "))
            continue
        for i, doc in enumerate(d for d in docs if d is not None):
            where = f"{f}" if len(docs) == 1 else f"{f}[{i}]"
            p, c = check_document(doc, where)
            problems += p
            commands += [dict(file=str(f), **x) for x in c]
    if as_json:
        print(json.dumps({"files": [str(f) for f in files], "problems": problems, "commands": commands}, indent=1))
    else:
        for c in commands:
            print(f"{c['file']}: {c['template']}: {shlex.join(c['argv'])}")
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        if not problems:
            print(f"ok: {len(files)} manifest file(s), {len(commands)} sg2 command line(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
