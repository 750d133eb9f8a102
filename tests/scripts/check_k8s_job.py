#!/usr/bin/env python3
"""Checks the Kubernetes Indexed Job that `strokeseg-train cv --emit k8s` writes.

Usage: check_k8s_job.py MANIFEST.yaml [--completions N]

- every YAML document validates against the Kubernetes OpenAPI schema of its kind, strictly
  (unknown fields are errors), with the JSON schemas kubernetes-validate bundles (offline;
  the newest Kubernetes version it knows);
- the document is a batch/v1 Job with completionMode Indexed, completions N (when given),
  restartPolicy Never (what podFailurePolicy needs), and a container whose command passes
  $(JOB_COMPLETION_INDEX) to `cv --task`, with JOB_COMPLETION_INDEX in its env.

Exits 1 on any problem. Needs: pip install kubernetes-validate (PyYAML, jsonschema with it).
`cargo xtask ci slurm` installs it into .cache/venv-k8s and runs this.
"""

import sys

import kubernetes_validate
import yaml


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    path = argv[1]
    completions = None
    if "--completions" in argv:
        completions = int(argv[argv.index("--completions") + 1])
    version = kubernetes_validate.latest_version()
    problems = []
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    if len(docs) != 1:
        problems.append(f"expected one document, got {len(docs)}")
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"schema (Kubernetes {version}, strict): {e.message} at {list(e.path)}")
        except kubernetes_validate.utils.SchemaNotFoundError as e:
            problems.append(f"no schema: {e}")
        if (doc.get("apiVersion"), doc.get("kind")) != ("batch/v1", "Job"):
            problems.append(f"not a batch/v1 Job: {doc.get('apiVersion')} {doc.get('kind')}")
            continue
        spec = doc.get("spec", {})
        if spec.get("completionMode") != "Indexed":
            problems.append(f"completionMode is {spec.get('completionMode')!r}, not Indexed")
        if completions is not None and spec.get("completions") != completions:
            problems.append(f"completions {spec.get('completions')}, expected {completions}")
        pod = spec.get("template", {}).get("spec", {})
        if pod.get("restartPolicy") != "Never":
            problems.append("restartPolicy is not Never (podFailurePolicy needs it)")
        containers = pod.get("containers", [])
        ok = False
        for c in containers:
            cmd = c.get("command", [])
            env = [e.get("name") for e in c.get("env", [])]
            if "--task" in cmd and cmd[cmd.index("--task") + 1] == "$(JOB_COMPLETION_INDEX)" \
                    and "JOB_COMPLETION_INDEX" in env:
                ok = True
        if not ok:
            problems.append("no container passes $(JOB_COMPLETION_INDEX) to --task")
    if problems:
        for p in problems:
            print(f"{path}: {p}", file=sys.stderr)
        return 1
    print(f"{path}: a valid batch/v1 Indexed Job (Kubernetes {version} schema, strict), "
          f"{completions if completions is not None else '?'} completions")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
