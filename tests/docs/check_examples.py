#!/usr/bin/env python3
"""Every pipeline, pooler and node file the docs show validates with `pgflow validate`.

Checked: examples/*.yaml, and each ```yaml block of README.md and docs/**/*.md whose top level is
a mapping. A block that holds a whole file (a pipeline: `pipeline` and `source`; a pooler:
`listen` and `databases`; a node: `cluster` and `etcd`) is validated as it stands; a fragment (`sinks:` alone, `transforms:`,
`auth:` ...) is validated inside a small complete file of its kind, its top-level keys replacing
that file's. A block of another kind (a YAML list, such as Prometheus alert rules) is not a
pgflow file and is skipped; a mapping whose keys fit neither kind fails, so a new kind of example
cannot go unchecked by accident.

What the examples name but a reader supplies is made up here: each ${VARIABLE} gets a value
(a URL for names ending in URL; ${NAME:-default} keeps its default), and the files a pooler example names (users file, TLS
certificate and key) are made in a scratch directory, absolute paths mapped into it.
Usage: tests/docs/check_examples.py SOURCE_DIR PGFLOW_BINARY
"""
import glob
import os
import re
import subprocess
import sys
import tempfile

PIPELINE_KEYS = {"pipeline", "source", "sinks", "transforms", "admin", "log", "dead_letter",
                 "documents",
                 "max_retained_wal", "restart", "flush_interval"}
POOLER_KEYS = {"listen", "threads", "admin", "auth", "databases", "tls", "max_client_conn",
               "hold_timeout", "scheduling", "server_tls", "unix_socket", "users", "http",
               "tenant_in_user", "tenant_from_sni"}

NODE_KEYS = {"name", "cluster", "etcd", "data_dir", "postgres", "api", "ttl", "loop_wait",
             "retry_timeout", "maximum_lag_on_failover", "synchronous"}

BASE_PIPELINE = """pipeline: docs_example
source:
  postgres:
    url: postgres://pgflow@127.0.0.1:5432/shop
    tables: [public.orders, public.customers, public.users, public.products]
sinks:
  out: {jsonl: {path: "-"}}
"""
BASE_POOLER = """listen: 127.0.0.1:6432
auth: {method: trust}
databases:
  app: {url: "postgres://app@127.0.0.1:5432/app"}
"""

TOP_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:")
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")  # ${NAME:-default} needs none


def yaml_blocks(path):
    """(first line number, text) of each ```yaml fenced block of a markdown file."""
    blocks, current, start = [], None, 0
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            stripped = line.strip()
            if current is None and stripped in ("```yaml", "```yml"):
                current, start = [], number + 1
            elif current is not None and stripped.startswith("```"):
                blocks.append((start, "".join(current)))
                current = None
            elif current is not None:
                current.append(line)
    return blocks


def sections(text):
    """The top-level keys of a YAML mapping, in order, each with the lines that belong to it."""
    result, key = {}, None
    for line in text.splitlines(keepends=True):
        match = TOP_KEY.match(line)
        if match:
            key = match.group(1)
            result[key] = line
        elif key is not None:
            result[key] += line
    return result


def merged(base, fragment):
    """base with each top-level key the fragment has replaced by the fragment's."""
    combined = sections(base)
    combined.update(sections(fragment))
    return "".join(text if text.endswith("\n") else text + "\n" for text in combined.values())


def kind_of(keys):
    if {"cluster", "etcd"} <= keys:
        return "node" if keys <= NODE_KEYS else None
    if {"pipeline", "source"} <= keys or keys & {"sinks", "transforms"} or keys == {"admin"}:
        return "pipeline" if keys <= PIPELINE_KEYS else None
    if {"listen", "databases"} & keys or {"auth", "tls", "http"} & keys:
        return "pooler" if keys <= POOLER_KEYS else None
    return None


def scratch_files(directory):
    """A users file and a self-signed certificate, for pooler examples that name them."""
    for name in ("users.txt",):
        with open(os.path.join(directory, name), "w") as f:
            f.write('"postgres" ""\n"app" "app-password"\n"pgflow_lookup" "lookup"\n')
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", os.path.join(directory, "server.key"),
                    "-out", os.path.join(directory, "server.crt")],
                   check=True, capture_output=True)
    os.chmod(os.path.join(directory, "server.key"), 0o600)
    with open(os.path.join(directory, "server.crt")) as src, \
            open(os.path.join(directory, "clients-ca.crt"), "w") as dst:
        dst.write(src.read())


def main():
    source_dir, binary = sys.argv[1], os.path.abspath(sys.argv[2])
    env = dict(os.environ)
    failures, checked = [], 0
    with tempfile.TemporaryDirectory(prefix="pgflow-docs-") as scratch:
        scratch_files(scratch)

        def validate(label, text):
            nonlocal checked
            for name in VARIABLE.findall(text):
                env.setdefault(name, "postgres://app@127.0.0.1:5432/app"
                               if name.endswith("URL") else "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
                               if "SECRET" in name else "docs-example-value")
            text = re.sub(r"(?<![\w.])/etc/pgflow/", scratch + "/", text)
            path = os.path.join(scratch, "example.yaml")
            with open(path, "w") as f:
                f.write(text)
            checked += 1
            run = subprocess.run([binary, "validate", path], cwd=scratch, env=env,
                                 capture_output=True, text=True)
            if run.returncode != 0:
                failures.append(f"{label}: pgflow validate exit {run.returncode}\n"
                                f"{run.stdout}{run.stderr}--- as validated:\n{text}")

        for path in sorted(glob.glob(os.path.join(source_dir, "examples", "*.yaml"))):
            with open(path, encoding="utf-8") as f:
                text = f.read()
            if os.path.basename(path) == "pooler.yaml":
                # Its users file sits beside it (examples/pooler-users.txt): validate it in place.
                checked += 1
                run = subprocess.run([binary, "validate", path], env=env, capture_output=True,
                                     text=True)
                if run.returncode != 0:
                    failures.append(f"{path}: exit {run.returncode}\n{run.stdout}{run.stderr}")
                continue
            validate(os.path.relpath(path, source_dir), text)

        pages = [os.path.join(source_dir, "README.md")] + sorted(
            glob.glob(os.path.join(source_dir, "docs", "**", "*.md"), recursive=True))
        for page in pages:
            relative = os.path.relpath(page, source_dir)
            for line, text in yaml_blocks(page):
                label = f"{relative}:{line}"
                if text.lstrip().startswith("- ") or not sections(text):
                    continue  # a list (alert rules and the like): not a pgflow file
                keys = set(sections(text))
                kind = kind_of(keys)
                if kind is None:
                    failures.append(f"{label}: a YAML mapping with keys {sorted(keys)} is neither "
                                    "a pipeline nor a pooler file (or a fragment of one)")
                elif kind == "node":
                    validate(label, text)
                elif kind == "pipeline":
                    validate(label, text if {"pipeline", "source"} <= keys
                             else merged(BASE_PIPELINE, text))
                else:
                    validate(label, text if {"listen", "databases"} <= keys
                             else merged(BASE_POOLER, text))
    for failure in failures:
        print(failure, file=sys.stderr)
    print(f"{checked} examples validated, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
