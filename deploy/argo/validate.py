#!/usr/bin/env python3
"""Validate sg2's Argo Workflows manifests and list the sg2 command lines in them.

    python3 deploy/argo/validate.py [--json] [FILE.yaml ...]     (default: every *.yaml beside this script)

Checks, per YAML document:
  * the schema: Argo's own models (the `hera` package, generated from Argo's OpenAPI spec) must accept the document,
    and every key must be a field of those models (pydantic would otherwise drop misspelt keys silently);
  * the references `argo lint` would catch: entrypoint, step and task templates, DAG dependencies (and no cycles),
    `{{workflow.parameters.X}}` / `{{inputs.parameters.X}}` names, arguments a called template needs, volume mounts;
  * this project's rules: every container states its resource requests, and the sg2 image runs GPU steps with a
    GPU limit;
  * the Kubernetes objects that `resource` templates create (the `manifest` string, parsed after the placeholders
    are replaced as Argo does): a Service or an indexed Job, every key a known field (containers, volumes and
    metadata by Argo's models of them, the rest by the table below), and the rules multi-machine training needs:
    an Indexed Job with completions == parallelism and backoffLimit 0, pods whose `subdomain` is a headless Service
    (clusterIP None) of the workflow that selects them, torchrun's variables (RANK from the completion index,
    WORLD_SIZE == completions, MASTER_ADDR = pod 0's name, MASTER_PORT) for each sg2 worker, and names that are
    valid DNS labels.
Every `sg2 ...` command line (in script sources, container command/args, `bash -c` scripts, and the containers of
embedded Jobs) is printed with its template placeholders replaced by the workflow's default values, split
shell-style, for sg2's own parser to check; an embedded container's environment comes with it.
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
# The core Kubernetes objects resource templates may create, as far as this project uses them: a dict lists the known
# keys ("*": any key), [spec] a list, a type the scalar's type, a pydantic model Argo's own model of that object
# (`hera` carries Kubernetes' Container, Volume, ObjectMeta and a few more, but not Service or Job).
POD_SPEC = {
    "containers": [argo.Container], "initContainers": [argo.Container], "volumes": [argo.Volume],
    "restartPolicy": str, "subdomain": str, "hostname": str, "serviceAccountName": str, "nodeSelector": {"*": str},
    "tolerations": [argo.Toleration], "affinity": argo.Affinity, "securityContext": argo.PodSecurityContext,
    "imagePullSecrets": [argo.LocalObjectReference], "priorityClassName": str, "schedulerName": str,
    "terminationGracePeriodSeconds": int, "dnsPolicy": str, "enableServiceLinks": bool,
}
SERVICE = {
    "apiVersion": str, "kind": str, "metadata": argo.ObjectMeta,
    "spec": {"clusterIP": str, "clusterIPs": [str], "type": str, "selector": {"*": str}, "ports": [argo.ServicePort],
             "publishNotReadyAddresses": bool, "ipFamilies": [str], "ipFamilyPolicy": str, "sessionAffinity": str},
}
JOB = {
    "apiVersion": str, "kind": str, "metadata": argo.ObjectMeta,
    "spec": {
        "completionMode": str, "completions": int, "parallelism": int, "backoffLimit": int,
        "backoffLimitPerIndex": int, "maxFailedIndexes": int, "activeDeadlineSeconds": int,
        "ttlSecondsAfterFinished": int, "suspend": bool, "podReplacementPolicy": str,
        "podFailurePolicy": {"rules": [{
            "action": str,
            "onExitCodes": {"containerName": str, "operator": str, "values": [int]},
            "onPodConditions": [{"type": str, "status": str}],
        }]},
        "template": {"metadata": argo.ObjectMeta, "spec": POD_SPEC},
    },
}
K8S_KINDS = {("v1", "Service"): SERVICE, ("batch/v1", "Job"): JOB}
ENUMS = {
    "spec.completionMode": {"NonIndexed", "Indexed"},
    "spec.template.spec.restartPolicy": {"Never", "OnFailure"},
    "spec.podFailurePolicy.rules.action": {"FailJob", "FailIndex", "Ignore", "Count"},
    "spec.podFailurePolicy.rules.onExitCodes.operator": {"In", "NotIn"},
}
GPU_WORDS = {"train", "generate", "metrics", "style-mix", "interpolate"}
RESOURCE_ACTIONS = {"create", "apply", "delete", "get", "patch", "replace"}
COMPLETION_INDEX = {
    "metadata.annotations['batch.kubernetes.io/job-completion-index']",
    "metadata.labels['batch.kubernetes.io/job-completion-index']",
}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# What `{{workflow.name}}` stands for in the checks: the generateName plus Argo's five characters.
SAMPLE_SUFFIX = "x7k2q"
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
        if words and words[0] == "exec":
            words = words[1:]
        if words and words[0] == "sg2":
            cut = next((i for i, w in enumerate(words) if set(w) <= set("|&;<>()")), len(words))
            out.append(words[:cut])
    return out


def check_schema(spec, raw, path):
    """Problems of `raw` against a spec of the table above (see K8S_KINDS), as `path: what` strings."""
    if isinstance(spec, dict):
        if not isinstance(raw, dict):
            return [f"{path}: expected a mapping, got {type(raw).__name__}"]
        out = []
        for key, value in raw.items():
            sub = spec.get(key, spec.get("*"))
            if sub is None:
                out.append(f"{path}.{key}: unknown field".lstrip("."))
            else:
                out += check_schema(sub, value, f"{path}.{key}".lstrip("."))
        return out
    if isinstance(spec, list):
        if not isinstance(raw, list):
            return [f"{path}: expected a list, got {type(raw).__name__}"]
        return [p for i, r in enumerate(raw) for p in check_schema(spec[0], r, f"{path}[{i}]")]
    if isinstance(spec, type) and issubclass(spec, BaseModel):
        try:
            model = spec.model_validate(raw)
        except ValidationError as e:
            return [f"{path}.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()]
        return [f"{k}: unknown field" for k in unknown_keys(model, raw, path)]
    if spec is int and (isinstance(raw, bool) or not isinstance(raw, int)):
        return [f"{path}: expected a whole number, got {raw!r}"]
    if spec is not int and not isinstance(raw, spec):
        return [f"{path}: expected {spec.__name__}, got {raw!r}"]
    enum = ENUMS.get(re.sub(r"\[\d+\]", "", path))
    if enum and raw not in enum:
        return [f"{path}: {raw!r} is not one of {sorted(enum)}"]
    return []


def container_lines(body, values):
    """sg2 command lines of a container: its command/args when they start with sg2, or the script of `sh -c`."""
    argv = [substitute(str(a), values) for a in list(body.get("command") or []) + list(body.get("args") or [])]
    if argv and Path(argv[0]).name == "sg2":
        return [["sg2"] + argv[1:]]
    if argv and Path(argv[0]).name in ("sh", "bash") and "-c" in argv[:-1]:
        return sg2_lines(argv[argv.index("-c") + 1])
    return []


def container_env(c):
    """A container's environment as name -> value, a value from the downward API as `fieldRef:<path>`."""
    env = {}
    for e in c.get("env") or []:
        src = e.get("valueFrom") or {}
        if "fieldRef" in src:
            env[e.get("name")] = "fieldRef:" + str(src["fieldRef"].get("fieldPath"))
        elif src:
            env[e.get("name")] = "valueFrom:" + ",".join(src)
        else:
            env[e.get("name")] = str(e.get("value", ""))
    return env


def check_resources(resources, where):
    """Problems and sg2 commands of the Kubernetes objects a workflow's resource templates handle.

    `resources`: (template name, action, parsed object, the template's resource block) in template order."""
    problems, commands = [], []
    made = [(t, o) for t, a, o, _ in resources if a in ("create", "apply", "replace")]
    services = {o["metadata"].get("name"): o for _, o in made if o.get("kind") == "Service"}
    for t, action, obj, block in resources:
        kind, name = obj.get("kind"), obj.get("metadata", {}).get("name")
        at = f"{where}: template {t}: {kind} {name}"
        if action == "delete":
            if not any(o.get("kind") == kind and o["metadata"].get("name") == name for _, o in made):
                problems.append(f"{at}: deletes an object no template of the workflow creates")
            continue
        for n in (name, obj.get("spec", {}).get("template", {}).get("spec", {}).get("subdomain")):
            if n is not None and not DNS_LABEL.match(str(n)):
                problems.append(f"{at}: {n!r} is not a DNS label (lower case, digits, '-', at most 63 characters)")
        if kind == "Service":
            spec = obj.get("spec", {})
            if not spec.get("selector"):
                problems.append(f"{at}: selects no pods (spec.selector)")
            continue
        if kind != "Job":
            continue
        spec = obj.get("spec", {})
        n = spec.get("completions")
        if spec.get("completionMode") != "Indexed":
            problems.append(f"{at}: spec.completionMode is {spec.get('completionMode')!r}, expected 'Indexed' "
                            "(each pod's rank is its completion index)")
        if n is None or spec.get("parallelism") != n:
            problems.append(f"{at}: spec.parallelism {spec.get('parallelism')!r} != spec.completions {n!r} "
                            "(every rank must run at once)")
        if spec.get("backoffLimit") != 0:
            problems.append(f"{at}: spec.backoffLimit is {spec.get('backoffLimit')!r}, expected 0 "
                            "(a replaced pod cannot rejoin the group; resume with a new submission)")
        if not block.get("failureCondition"):
            problems.append(f"{at}: the resource template has no failureCondition (a failed Job would be waited on)")
        cond = re.fullmatch(r"\s*status\.succeeded\s*==?\s*(\d+)\s*", str(block.get("successCondition", "")))
        if not cond or int(cond.group(1)) != n:
            problems.append(f"{at}: successCondition {block.get('successCondition')!r} is not "
                            f"'status.succeeded == {n}' (all completions)")
        pod = spec.get("template", {})
        labels = pod.get("metadata", {}).get("labels") or {}
        sub = pod.get("spec", {}).get("subdomain")
        svc = services.get(sub)
        if sub is None:
            problems.append(f"{at}: the pods have no subdomain (a headless Service that gives them DNS names)")
        elif svc is None:
            problems.append(f"{at}: subdomain {sub!r} is not a Service the workflow creates "
                            f"(services: {sorted(services)})")
        else:
            if svc.get("spec", {}).get("clusterIP") != "None":
                problems.append(f"{at}: Service {sub} is not headless (spec.clusterIP: None)")
            selector = svc.get("spec", {}).get("selector") or {}
            if any(labels.get(k) != v for k, v in selector.items()):
                problems.append(f"{at}: Service {sub}'s selector {selector} does not match the pod labels {labels}")
        if len(f"{name}-{max((n or 1) - 1, 0)}") > 63:
            problems.append(f"{at}: the pod hostnames {name}-<index> exceed 63 characters")
        volumes = {v.get("name") for v in pod.get("spec", {}).get("volumes") or []}
        for c in pod.get("spec", {}).get("containers") or []:
            cat = f"{at}: container {c.get('name')}"
            for m in c.get("volumeMounts") or []:
                if m.get("name") not in volumes:
                    problems.append(f"{cat}: mounts unknown volume {m.get('name')!r}")
            res = c.get("resources") or {}
            if not res.get("requests"):
                problems.append(f"{cat}: no resource requests")
            env = container_env(c)
            for words in container_lines(c, {}):
                commands.append({"template": t, "argv": words, "env": env})
                if GPU_WORDS & set(words[1:3]) and "nvidia.com/gpu" not in (res.get("limits") or {}):
                    problems.append(f"{cat}: `sg2 {words[1]}` runs without a GPU limit")
                if "--nnodes" in words:  # the local launcher: it sets the variables for its workers
                    continue
                problems += [f"{cat}: {p}" for p in torchrun_env(env, n, f"{name}-0.{sub}")]
    return problems, commands


def torchrun_env(env, world, master):
    """What is wrong with an indexed Job pod's torchrun variables."""
    out = []
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        if k not in env:
            out.append(f"{k} is not set (torchrun's variables: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)")
    if "RANK" in env and env["RANK"] not in {f"fieldRef:{p}" for p in COMPLETION_INDEX} | {"$(JOB_COMPLETION_INDEX)"}:
        out.append(f"RANK is {env['RANK']!r}, not the pod's completion index "
                   "(fieldRef metadata.annotations['batch.kubernetes.io/job-completion-index'])")
    if "WORLD_SIZE" in env and env["WORLD_SIZE"] != str(world):
        out.append(f"WORLD_SIZE is {env['WORLD_SIZE']!r}, not the Job's completions {world!r}")
    if "MASTER_ADDR" in env and env["MASTER_ADDR"].split(".svc")[0] not in (master, master.split(".")[0]):
        out.append(f"MASTER_ADDR is {env['MASTER_ADDR']!r}, not pod 0's name {master!r}")
    if "MASTER_PORT" in env and not (env["MASTER_PORT"].isdigit() and 0 < int(env["MASTER_PORT"]) < 65536):
        out.append(f"MASTER_PORT is {env['MASTER_PORT']!r}, not a port number")
    if env.get("LOCAL_RANK", "0") != "0":
        out.append(f"LOCAL_RANK is {env['LOCAL_RANK']!r}; one worker per pod has local rank 0")
    return out


def check_manifest(text, values, at):
    """(problems, parsed object or None) of a resource template's manifest string."""
    try:
        obj = yaml.safe_load(substitute(text, values))
    except yaml.YAMLError as e:
        return [f"{at}: the manifest is not YAML: {e}".replace("\n", " ")], None
    if not isinstance(obj, dict):
        return [f"{at}: the manifest is not a mapping"], None
    spec = K8S_KINDS.get((obj.get("apiVersion"), obj.get("kind")))
    if spec is None:
        known = ", ".join(f"{a} {k}" for a, k in K8S_KINDS)
        return [f"{at}: apiVersion {obj.get('apiVersion')!r} kind {obj.get('kind')!r} is not one of: {known}"], None
    if not isinstance(obj.get("metadata"), dict) or not obj["metadata"].get("name"):
        return [f"{at}: {obj['kind']} without metadata.name"], None
    return [f"{at}: {obj['kind']}: {p}" for p in check_schema(spec, obj, "")], obj


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
    wf_name = doc.get("metadata", {}).get("name") or doc.get("metadata", {}).get("generateName", "wf-") + SAMPLE_SUFFIX
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
    if spec.get("onExit") and spec["onExit"] not in templates:
        problems.append(f"{where}: spec.onExit {spec['onExit']!r} is not a template")
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

    resources = []
    for name, t in templates.items():
        inputs = {p["name"]: str(p.get("value", p.get("default", "")))
                  for p in t.get("inputs", {}).get("parameters", [])}
        inputs.update({k: v for k, v in caller_args.get(name, {}).items() if k in inputs and not inputs[k]})
        values = {f"workflow.parameters.{k}": v for k, v in wf_params.items()}
        values["workflow.name"] = wf_name
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

        if "resource" in t:
            r = t["resource"]
            at = f"{where}: template {name}"
            if r.get("action") not in RESOURCE_ACTIONS:
                problems.append(f"{at}: resource action {r.get('action')!r} is not one of {sorted(RESOURCE_ACTIONS)}")
            p, obj = check_manifest(r.get("manifest", ""), values, at)
            problems += p
            if obj is not None:
                conditions = {k: substitute(str(r[k]), values) for k in ("successCondition", "failureCondition") if r.get(k)}
                resources.append((name, r.get("action"), obj, conditions))
        body = t.get("script") or t.get("container")
        if body is None:
            continue
        for m in body.get("volumeMounts", []):
            if m.get("name") not in volumes:
                problems.append(f"{where}: template {name}: mounts unknown volume {m.get('name')!r}")
        limits = body.get("resources", {}).get("limits", {})
        if not body.get("resources", {}).get("requests"):
            problems.append(f"{where}: template {name}: no resource requests")
        lines = []
        if "script" in t:
            lines = sg2_lines(substitute(t["script"].get("source", ""), values))
        lines += container_lines(body, values)
        for words in lines:
            commands.append({"template": name, "argv": words})
            if GPU_WORDS & set(words[1:3]) and "nvidia.com/gpu" not in limits:
                problems.append(f"{where}: template {name}: `sg2 {words[1]}` runs without a GPU limit")
    p, c = check_resources(resources, where)
    return list(dict.fromkeys(problems + p)), commands + c


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
