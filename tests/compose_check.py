#!/usr/bin/env python3
"""Check docker-compose.yml and the Dockerfile without a Docker engine.

Every command, flag, port and volume in the compose file is checked against
what the programs really accept (their `--help`, run here) and against
scripts/cluster.sh, which starts the same cluster without Docker:

* flags: each `--flag` of a command exists in that program's --help
  (didmesh-node and its subcommands, home-api, the Envoy sidecar's render.py,
  the aws-jwt-verify server.js, gunicorn); each DIDMESH_*/HOME_API_* variable
  in `environment` is one the program reads;
* programs: each command's program is installed in the image target the
  service builds (Dockerfile `COPY`/`pip install`), and each target exists;
* ports: each address a service listens on for others (0.0.0.0) is published
  as the same port on 127.0.0.1, and nothing else is; loopback-only
  listeners (Envoy's admin, a sidecar's app) are not published; a sidecar's
  app shares the sidecar's network namespace and listens on the port its
  `--upstream` names;
* the cluster: as many nodes as cluster.sh starts by default, node i on HTTP
  700i and libp2p 710i, home-api on 8080 with cluster.sh's audience; nodes
  bootstrap from node1's p2p address; `init-network --nodes` matches;
* references: JWKS and upstream URLs name a service that listens there, with
  https exactly when that node has --tls-cert, a CA the verifier trusts, and
  a certificate that names the host; `depends_on` names existing services;
* the checks themselves: a self-test breaks the file in typical ways (a
  flag that does not exist, a port that moved, a data dir outside a volume,
  ...) and expects each to be caught;
* volumes: each node's --data-dir is its own named volume, the one `init`
  writes that node's folder into; every file a flag names lies in a volume
  mounted in that service; every named volume is declared; mount points of
  the runtime image exist in it (so new volumes get the service user).

    python3 tests/compose_check.py            # needs PyYAML (sidecars/setup.sh's .venv has it)

Binaries from $DIDMESH_BIN_DIR, else target/debug, else target/release.
Prints one line per check and `N passed, M failed`; exit 1 on any failure.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
CLUSTER = ROOT / "scripts" / "cluster.sh"
VENV_PY = ROOT / ".venv" / "bin" / "python"

FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
ENV = re.compile(r"\[env:? ([A-Z][A-Z0-9_]*)")


@dataclass
class Report:
    passed: int = 0
    failed: list[str] = field(default_factory=list)
    quiet: bool = False

    def check(self, ok: bool, what: str) -> bool:
        if ok:
            self.passed += 1
        else:
            self.failed.append(what)
        if not self.quiet:
            print(f"{'ok   ' if ok else 'FAIL '} {what}")
        return ok


# --- what the programs accept ---


@dataclass
class Help:
    flags: set[str]
    envs: set[str]
    text: str


def help_of(argv: list[str]) -> Help:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    text = done.stdout + done.stderr
    if done.returncode != 0 or not text.strip():
        raise SystemExit(f"compose_check: {' '.join(argv)} failed ({done.returncode}):\n{text}")
    return Help(set(FLAG.findall(text)), set(ENV.findall(text)), text)


def bin_dir() -> Path:
    if os.environ.get("DIDMESH_BIN_DIR"):
        return Path(os.environ["DIDMESH_BIN_DIR"])
    for profile in ("debug", "release"):
        d = ROOT / "target" / profile
        if (d / "didmesh-node").exists() and (d / "home-api").exists():
            return d
    raise SystemExit("compose_check: no didmesh-node/home-api in target/debug or target/release "
                     "(cargo build -p didmesh-node -p home-api) or $DIDMESH_BIN_DIR")


class Programs:
    """--help of every program the compose file runs, asked once each."""

    def __init__(self) -> None:
        self.bins = bin_dir()
        self.cache: dict[tuple, Help] = {}
        node_help = self.get(("didmesh-node",))
        # clap lists subcommands under "Commands:" as two-space-indented words.
        commands = node_help.text.split("Commands:", 1)[1].split("Options:", 1)[0] if "Commands:" in node_help.text else ""
        self.node_subcommands = {m for m in re.findall(r"^  ([a-z][a-z-]*)\s", commands, re.M) if m != "help"}

    def get(self, key: tuple) -> Help:
        if key not in self.cache:
            self.cache[key] = help_of(self.argv(key))
        return self.cache[key]

    def argv(self, key: tuple) -> list[str]:
        name, *sub = key
        python = str(VENV_PY) if VENV_PY.exists() else sys.executable
        if name in ("didmesh-node", "home-api", "didmesh"):
            return [str(self.bins / name), *sub, "--help"]
        if name == "envoy-run.sh":  # run.sh hands its arguments to render.py
            return [python, str(ROOT / "sidecars/envoy/render.py"), "--help"]
        if name == "server.js":
            return [shutil.which("node") or "node", str(ROOT / "sidecars/aws-jwt-verify/server.js"), "--help"]
        if name == "gunicorn":
            return [python, "-m", "gunicorn", "--help"]
        raise KeyError(name)


# --- reading the compose file ---


def flag_values(argv: list[str]) -> dict[str, list[str]]:
    """{--flag: [values]} for `--flag=value` and `--flag value` forms (a flag
    followed by another flag, or last, is a switch: value "")."""
    out: dict[str, list[str]] = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--"):
            name, eq, value = a.partition("=")
            if not eq:
                if i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                    value = argv[i + 1]
                    i += 1
            out.setdefault(name, []).append(value)
        i += 1
    return out


def one(values: dict[str, list[str]], flag: str) -> str | None:
    v = values.get(flag)
    return v[-1] if v else None


def shell_commands(script: str) -> list[list[str]]:
    """Simple commands of an `sh -c` script (split on newlines, ||, &&, ;)."""
    cmds: list[list[str]] = []
    for line in script.splitlines():
        words = shlex.split(line, comments=True)
        current: list[str] = []
        for w in words + [";"]:
            if w in ("||", "&&", ";", "|"):
                if current:
                    cmds.append(current)
                current = []
            else:
                current.append(w)
    return cmds


def program_key(argv: list[str], programs: Programs) -> tuple | None:
    """Which --help a command is checked against; None: not one of ours."""
    prog = Path(argv[0]).name
    if prog == "didmesh-node":
        sub = next((a for a in argv[1:] if not a.startswith("-")), None)
        return ("didmesh-node", sub) if sub in programs.node_subcommands else ("didmesh-node",)
    if prog in ("home-api", "didmesh", "gunicorn"):
        return (prog,)
    if argv[0] == "/sidecars/envoy/run.sh":
        return ("envoy-run.sh",)
    if prog == "node" and len(argv) > 1 and argv[1].endswith("/server.js"):
        return ("server.js",)
    return None


def host_port(addr: str) -> tuple[str, int] | None:
    """'0.0.0.0:7001' -> ('0.0.0.0', 7001); '/ip4/0.0.0.0/tcp/7101' likewise."""
    m = re.fullmatch(r"/ip[46]/([^/]+)/tcp/(\d+)(?:/p2p/\w+)?", addr)
    if m:
        return m.group(1), int(m.group(2))
    host, sep, port = addr.rpartition(":")
    if sep and port.isdigit():
        return host.strip("[]"), int(port)
    return None


@dataclass
class Service:
    name: str
    spec: dict
    argv: list[str]
    key: tuple | None
    flags: dict[str, list[str]]
    listens: dict[str, tuple[str, int]]  # flag -> (host, port)
    mounts: dict[str, str]  # container path -> volume name

    @property
    def profiles(self) -> set[str]:
        return set(self.spec.get("profiles", []))

    @property
    def env(self) -> dict[str, str]:
        env = self.spec.get("environment", {}) or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env)
        return {k: str(v) for k, v in env.items()}

    def in_volume(self, path: str) -> str | None:
        for target, volume in self.mounts.items():
            if path == target or path.startswith(target.rstrip("/") + "/"):
                return volume
        return None


LISTEN_FLAGS = {
    "didmesh-node": ["--http-addr", "--p2p-addr"],
    "home-api": ["--listen"],
    "envoy-run.sh": ["--listen", "--admin"],
    "server.js": ["--listen"],
    "gunicorn": ["--bind"],
}
FILE_FLAGS = ["--data-dir", "--tls-cert", "--tls-key", "--jwks-ca", "--genesis", "--chdir"]
FILE_ENVS = ["NODE_EXTRA_CA_CERTS", "DIDMESH_JWKS_CA", "DIDMESH_TLS_CERT", "DIDMESH_TLS_KEY"]


def load_services(compose: dict, programs: Programs) -> dict[str, Service]:
    services = {}
    for name, spec in compose["services"].items():
        command = spec.get("command", [])
        argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
        key = program_key(argv, programs) if argv else None
        flags = flag_values(argv)
        listens = {}
        for flag in LISTEN_FLAGS.get(key[0] if key else "", []):
            value = one(flags, flag)
            if value and host_port(value):
                listens[flag] = host_port(value)
        mounts = {}
        for v in spec.get("volumes", []):
            src, _, rest = str(v).partition(":")
            target = rest.split(":")[0]
            mounts[target] = src
        services[name] = Service(name, spec, argv, key, flags, listens, mounts)
    return services


# --- the checks ---


def check_programs_and_flags(r: Report, services: dict[str, Service], programs: Programs, dockerfile: str) -> None:
    targets = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile, re.M | re.I))
    stages = dict(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)\n(.*?)(?=^FROM\s|\Z)", dockerfile, re.M | re.S | re.I))
    installed = installed_programs(dockerfile)
    for s in services.values():
        build = s.spec.get("build", {})
        target = build.get("target") if isinstance(build, dict) else None
        r.check(target in targets, f"{s.name}: builds Dockerfile target {target!r}")
        if not s.argv:
            r.check(False, f"{s.name}: has a command")
            continue
        commands = [s.argv]
        if s.argv[0] == "sh":
            script = s.argv[-1]
            commands = shell_commands(script)
        for argv in commands:
            prog = argv[0]
            r.check(prog in installed.get(target, set()), f"{s.name}: `{prog}` is installed in target {target}")
            key = program_key(argv, programs)
            if key is None:
                continue
            known = programs.get(key)
            flags = flag_values(argv)
            unknown = sorted(set(flags) - known.flags)
            r.check(not unknown, f"{s.name}: flags of `{' '.join(key)}` exist in its --help" +
                    (f" (unknown: {', '.join(unknown)})" if unknown else f" ({len(flags)} flags)"))
        # Files the command needs from the repo are copied into the image.
        for path in [a for a in s.argv if a.startswith("/sidecars/")]:
            repo_path = ROOT / path.lstrip("/")
            r.check(repo_path.exists(), f"{s.name}: {path} is the repo's {repo_path.relative_to(ROOT)}")
            copied = any(path.startswith(dst.rstrip("/")) for dst in re.findall(r"^COPY\s+.*\s(/sidecars/\S*)", stages.get(target, ""), re.M)) \
                or re.search(rf"^WORKDIR\s+{re.escape(str(Path(path).parent))}\s*$", stages.get(target, ""), re.M)
            r.check(bool(copied), f"{s.name}: target {target} copies {path}")
        # Environment variables a program of ours reads.
        for var in s.env:
            if not var.startswith(("DIDMESH_", "HOME_API_")):
                continue
            if s.key and s.key[0] in ("didmesh-node", "home-api", "server.js", "envoy-run.sh"):
                r.check(var in programs.get(s.key).envs, f"{s.name}: {var} is read by {s.key[0]} (--help)")
            elif s.key and s.key[0] == "gunicorn":
                app = (ROOT / "sidecars/flask/home_app.py").read_text()
                r.check(f'"{var}"' in app, f"{s.name}: {var} is read by sidecars/flask/home_app.py")
            elif s.argv[0] == "sh":
                script = (ROOT / "sidecars/testkit/local-ca.sh").read_text()
                r.check(var in script or var.startswith("LOCAL_CA_"), f"{s.name}: {var} is read by local-ca.sh")
        for var in [v for v in s.env if v.startswith("LOCAL_CA_")]:
            r.check(var in (ROOT / "sidecars/testkit/local-ca.sh").read_text(), f"{s.name}: {var} is read by local-ca.sh")
        if s.key == ("gunicorn",):
            chdir = one(s.flags, "--chdir") or ""
            module, _, factory = s.argv[-1].partition(":")
            source = ROOT / chdir.lstrip("/") / f"{module}.py"
            r.check(source.exists() and f"def {factory.rstrip('()')}(" in source.read_text(),
                    f"{s.name}: gunicorn app {s.argv[-1]} is defined in {source.relative_to(ROOT)}")


def installed_programs(dockerfile: str) -> dict[str, set[str]]:
    """Programs each Dockerfile target provides, as the Dockerfile says:
    binaries the build stage copies out, files COPY'd to /usr/local/bin,
    folders COPY'd under /sidecars (their files), pip-installed gunicorn,
    the base image's interpreter; plus the shell and coreutils of Debian."""
    stages = re.findall(r"^FROM\s+(\S+)\s+AS\s+(\S+)\n(.*?)(?=^FROM\s|\Z)", dockerfile, re.M | re.S | re.I)
    built = set(re.findall(r"target/release/([\w-]+)", dockerfile))
    out: dict[str, set[str]] = {}
    for base, name, body in stages:
        progs = {"sh", "test", "cp"}
        if "COPY --from=build /out/ /usr/local/bin/" in body:
            progs |= built
        for src, dst in re.findall(r"^COPY\s+(?!--)(\S+)\s+(\S+)\s*$", body, re.M):
            if dst.startswith("/usr/local/bin/"):
                progs.add(Path(dst).name)
            if dst.startswith("/sidecars/") and (ROOT / src).is_dir():
                progs |= {f"{dst.rstrip('/')}/{f.name}" for f in (ROOT / src).iterdir()}
        if re.search(r"pip install[^\n]*gunicorn", body):
            progs.add("gunicorn")
        if base.startswith("node:"):
            progs.add("node")
        if base.startswith("python:"):
            progs |= {"python", "python3"}
        out[name] = progs
    return out


def check_ports(r: Report, services: dict[str, Service]) -> None:
    for s in services.values():
        if s.key and s.key[0] in LISTEN_FLAGS:
            main_flag = LISTEN_FLAGS[s.key[0]][0]
            r.check(main_flag in s.listens, f"{s.name}: {main_flag} is given (a default loopback address is unreachable in a container)")
        published: dict[int, str] = {}
        for p in s.spec.get("ports", []):
            parts = str(p).split(":")
            r.check(len(parts) == 3 and parts[0] == "127.0.0.1",
                    f"{s.name}: port {p} is published on 127.0.0.1 only")
            container = int(parts[-1].split("/")[0])
            published[container] = parts[-2] if len(parts) >= 2 else ""
            r.check(published[container] == str(container), f"{s.name}: port {p} keeps its number on the host")
        exposed = {int(str(e).split("/")[0]) for e in s.spec.get("expose", [])}
        open_ports = {port for host, port in s.listens.values() if host in ("0.0.0.0", "::")}
        loopback = {port for host, port in s.listens.values() if host in ("127.0.0.1", "::1", "localhost")}
        for flag, (host, port) in s.listens.items():
            if port in open_ports:
                r.check(port in published or port in exposed, f"{s.name}: {flag} {host}:{port} is published")
            else:
                r.check(port not in published, f"{s.name}: loopback-only {flag} {host}:{port} is not published")
        for port in published:
            r.check(port in open_ports, f"{s.name}: published port {port} is one it listens on (0.0.0.0)")
        mode = s.spec.get("network_mode", "")
        if mode.startswith("service:"):
            owner = services.get(mode.split(":", 1)[1])
            if not r.check(owner is not None, f"{s.name}: network_mode {mode} names a service"):
                continue
            r.check("ports" not in s.spec and "networks" not in s.spec,
                    f"{s.name}: shares {owner.name}'s network namespace, so has no ports/networks of its own")
            r.check(bool(s.listens) and all(h in ("127.0.0.1", "::1") for h, _ in s.listens.values()),
                    f"{s.name}: listens on loopback only (reachable through {owner.name} alone)")
            upstream = urlsplit(one(owner.flags, "--upstream") or "")
            r.check(upstream.hostname == "127.0.0.1" and upstream.port in {p for _, p in s.listens.values()},
                    f"{s.name}: listens where {owner.name}'s --upstream ({upstream.geturl()}) points")
            r.check(not (set(p for _, p in s.listens.values()) & set(p for _, p in owner.listens.values())),
                    f"{s.name}: its port does not clash with {owner.name}'s in the shared namespace")
            r.check(s.profiles == owner.profiles, f"{s.name}: in the same profile(s) as {owner.name}")


@dataclass
class ClusterScript:
    nodes: int
    http_base: int
    p2p_base: int
    app_port: int
    audience: str


def read_cluster_sh(text: str) -> ClusterScript:
    def grab(pattern: str) -> str:
        m = re.search(pattern, text, re.M)
        if not m:
            raise SystemExit(f"compose_check: scripts/cluster.sh no longer matches {pattern!r}; update this check")
        return m.group(1)

    return ClusterScript(
        nodes=int(grab(r"local n=(\d+) with=")),
        http_base=int(grab(r"http_port\(\) \{ echo \$\(\((\d+) \+ \$1\)\)")),
        p2p_base=int(grab(r"p2p_port\(\) \{ echo \$\(\((\d+) \+ \$1\)\)")),
        app_port=int(grab(r"APP_ADDR=\$\{APP_ADDR:-[\d.]+:(\d+)\}")),
        audience=grab(r"^AUDIENCE=(\S+)"),
    )


def check_cluster(r: Report, services: dict[str, Service], cluster: ClusterScript, compose: dict) -> None:
    nodes = {n: s for n, s in services.items() if s.key == ("didmesh-node",)}
    r.check(sorted(nodes) == [f"node{i}" for i in range(1, cluster.nodes + 1)],
            f"nodes are node1..node{cluster.nodes}, as cluster.sh starts by default (compose: {', '.join(sorted(nodes))})")
    node1_p2p = None
    for name, s in sorted(nodes.items()):
        i = int(name.removeprefix("node"))
        http = s.listens.get("--http-addr", ("", 0))[1]
        p2p = s.listens.get("--p2p-addr", ("", 0))[1]
        r.check(http == cluster.http_base + i, f"{name}: HTTP on {http}, cluster.sh uses {cluster.http_base + i}")
        r.check(p2p == cluster.p2p_base + i, f"{name}: libp2p on {p2p}, cluster.sh uses {cluster.p2p_base + i}")
        if i == 1:
            node1_p2p = (s.spec.get("networks", {}) or {}).get("mesh", {}) or {}
            r.check(not s.flags.get("--bootstrap"), "node1: bootstraps from no one (as in cluster.sh)")
            continue
        boots = s.flags.get("--bootstrap", [])
        ip = (node1_p2p or {}).get("ipv4_address")
        want = f"/ip4/{ip}/tcp/{cluster.p2p_base + 1}"
        r.check(any(b == want or b.startswith(want + "/p2p/") for b in boots),
                f"{name}: --bootstrap is node1's p2p address {want} (libp2p here has no DNS)")
        public = one(s.flags, "--public-url") or ""
        scheme = "https" if "--tls-cert" in s.flags else "http"
        r.check(public == f"{scheme}://127.0.0.1:{http}", f"{name}: --public-url {public} is how the host reaches it")
    if nodes:
        node1 = nodes.get("node1")
        public = one(node1.flags, "--public-url") if node1 else None
        r.check(public == f"http://127.0.0.1:{cluster.http_base + 1}", f"node1: --public-url {public} is how the host reaches it")
    # Static addresses lie in the declared subnet.
    subnets = [c.get("subnet", "") for c in (compose.get("networks", {}).get("mesh", {}).get("ipam", {}).get("config", []))]
    for name, s in nodes.items():
        ip = ((s.spec.get("networks", {}) or {}).get("mesh", {}) or {}).get("ipv4_address", "")
        r.check(any(ip.startswith(sub.rsplit(".", 1)[0] + ".") for sub in subnets if sub),
                f"{name}: address {ip} is in the mesh subnet {subnets}")

    apps = {n: s for n, s in services.items() if s.key == ("home-api",) and one(s.flags, "--auth") in (None, "jwt")}
    r.check(list(apps) == ["home-api"], f"one home-api with the Rust auth-layer (--auth jwt): {list(apps)}")
    for name, s in apps.items():
        port = s.listens.get("--listen", ("", 0))[1]
        r.check(port == cluster.app_port, f"{name}: listens on {port}, cluster.sh uses {cluster.app_port}")
        r.check(one(s.flags, "--audience") == cluster.audience, f"{name}: --audience is cluster.sh's {cluster.audience}")

    inits = [(s, argv) for s in services.values() if s.argv[:1] == ["sh"]
             for argv in shell_commands(s.argv[-1]) if argv[:2] == ["didmesh-node", "init-network"]]
    if r.check(len(inits) == 1, "one service runs `didmesh-node init-network`"):
        init, argv = inits[0]
        flags = flag_values(argv)
        r.check(one(flags, "--nodes") == str(len(nodes)), f"{init.name}: init-network --nodes {one(flags, '--nodes')} = {len(nodes)} node services")
        out = one(flags, "--out") or ""
        for name, s in nodes.items():
            data = one(s.flags, "--data-dir") or ""
            volume = s.mounts.get(data)
            r.check(volume is not None, f"{name}: --data-dir {data} is a volume mount")
            r.check(init.mounts.get(f"{out}/{name}") == volume and volume is not None,
                    f"{name}: {init.name} writes {out}/{name} into the same volume ({volume})")
        volumes = [s.mounts.get(one(s.flags, "--data-dir") or "") for s in nodes.values()]
        r.check(len(set(volumes)) == len(volumes), "every node has a data volume of its own")
        issuers = {one(flags, "--issuer")}
        issuers |= {one(s.flags, "--issuer") for s in services.values() if "--issuer" in s.flags}
        issuers |= {s.env["DIDMESH_ISSUER"] for s in services.values() if "DIDMESH_ISSUER" in s.env}
        r.check(len(issuers) == 1 and None not in issuers, f"one issuer everywhere: {issuers}")


def check_references(r: Report, services: dict[str, Service], compose: dict) -> None:
    declared = set(compose.get("volumes", {}) or {})
    for s in services.values():
        for target, volume in s.mounts.items():
            r.check(volume in declared, f"{s.name}: volume {volume} (at {target}) is declared")
        for flag in FILE_FLAGS:
            for path in s.flags.get(flag, []):
                if path.startswith("/sidecars/"):
                    continue  # in the image (checked above)
                r.check(s.in_volume(path) is not None, f"{s.name}: {flag} {path} is in a mounted volume")
        for var in FILE_ENVS:
            if var in s.env:
                r.check(s.in_volume(s.env[var]) is not None, f"{s.name}: {var}={s.env[var]} is in a mounted volume")
        deps = s.spec.get("depends_on", [])
        for dep in deps if isinstance(deps, list) else list(deps):
            target = services.get(dep)
            r.check(target is not None, f"{s.name}: depends_on {dep} exists")
            if target is not None and target.profiles:
                r.check(target.profiles <= s.profiles, f"{s.name}: depends on {dep} only within its profile(s)")
        # URLs to other services: JWKS and upstreams.
        urls = [(f, v) for f in ("--jwks-url", "--jwks-uri", "--upstream") for v in s.flags.get(f, [])]
        urls += [(k, v) for k, v in s.env.items() if k in ("DIDMESH_JWKS_URI", "DIDMESH_UPSTREAM")]
        for what, url in urls:
            u = urlsplit(url)
            if u.hostname == "127.0.0.1":
                continue  # a sidecar's app, checked with the ports
            target = services.get(u.hostname or "")
            if not r.check(target is not None, f"{s.name}: {what} {url} names a service"):
                continue
            port = u.port or (443 if u.scheme == "https" else 80)
            r.check(port in {p for _, p in target.listens.values()}, f"{s.name}: {target.name} listens on {port} ({what})")
            tls = "--tls-cert" in target.flags
            r.check((u.scheme == "https") == tls, f"{s.name}: {what} uses {u.scheme}, {target.name} serves {'https' if tls else 'http'}")
            if u.scheme == "https":
                ca = one(s.flags, "--jwks-ca") or s.env.get("NODE_EXTRA_CA_CERTS") or s.env.get("DIDMESH_JWKS_CA")
                r.check(ca is not None, f"{s.name}: trusts a CA for {url}")
                sans = " ".join(x.env.get("LOCAL_CA_EXTRA_SAN", "") for x in services.values())
                r.check(f"DNS:{u.hostname}" in sans, f"{s.name}: the certificate names {u.hostname} (LOCAL_CA_EXTRA_SAN)")
            if target.profiles:
                r.check(target.profiles <= s.profiles, f"{s.name}: reaches {target.name} only within its profile(s)")


def check_profiles(r: Report, services: dict[str, Service]) -> None:
    for profile in ("envoy", "aws-jwt-verify", "flask"):
        members = sorted(n for n, s in services.items() if profile in s.profiles)
        r.check(bool(members), f"profile {profile}: {', '.join(members) or 'nothing'}")
    default = sorted(n for n, s in services.items() if not s.profiles)
    r.check({"init", "home-api"} <= set(default) and sum(n.startswith("node") for n in default) >= 1,
            f"default services (no profile): {', '.join(default)}")


def check_image_mount_points(r: Report, services: dict[str, Service], dockerfile: str) -> None:
    runtime = re.search(r"^FROM\s+\S+\s+AS\s+runtime\n(.*?)(?=^FROM\s|\Z)", dockerfile, re.M | re.S)
    made = set(re.findall(r"mkdir -p ([^&\n]+)", runtime.group(1) if runtime else ""))
    made = {p for line in made for p in line.split()}
    for s in services.values():
        if (s.spec.get("build") or {}).get("target") != "runtime":
            continue
        for target, _ in s.mounts.items():
            r.check(target in made, f"{s.name}: mount point {target} exists in the runtime image (owner didmesh)")


def run_checks(compose: dict, dockerfile: str, programs: Programs, quiet: bool = False) -> Report:
    r = Report(quiet=quiet)
    services = load_services(compose, programs)
    check_programs_and_flags(r, services, programs, dockerfile)
    check_ports(r, services)
    check_cluster(r, services, read_cluster_sh(CLUSTER.read_text()), compose)
    check_references(r, services, compose)
    check_profiles(r, services)
    check_image_mount_points(r, services, dockerfile)
    return r


def _cmd(compose: dict, service: str) -> list:
    return compose["services"][service]["command"]


def _swap(items: list, old: str, new: str) -> None:
    items[items.index(old)] = new


# Each mistake must make at least one check fail, or the checks are vacuous.
MUTATIONS: dict[str, Callable[[dict], None]] = {
    "a flag the node does not have": lambda c: _cmd(c, "node1").append("--http-adress=0.0.0.0:7001"),
    "a home-api flag that does not exist": lambda c: _cmd(c, "home-api").append("--jwks-ca=/ca/ca.pem"),
    "an init-network flag that does not exist": lambda c: c["services"]["init"]["command"].__setitem__(
        -1, c["services"]["init"]["command"][-1].replace("--nodes 3", "--node-count 3")),
    "node2 on another HTTP port than cluster.sh": lambda c: _swap(_cmd(c, "node2"), "--http-addr=0.0.0.0:7002", "--http-addr=0.0.0.0:7012"),
    "a listener not published": lambda c: c["services"]["node1"]["ports"].pop(),
    "a published port nobody listens on": lambda c: c["services"]["home-api"]["ports"].append("127.0.0.1:9090:9090"),
    "a port published on all interfaces": lambda c: c["services"]["home-api"].__setitem__("ports", ["8080:8080"]),
    "node3 without TLS while verifiers use https": lambda c: [_cmd(c, "node3").remove(a) for a in list(_cmd(c, "node3")) if a.startswith("--tls-")],
    "a data dir outside any volume": lambda c: _swap(_cmd(c, "node2"), "--data-dir=/data", "--data-dir=/var/lib/didmesh"),
    "two nodes on one data volume": lambda c: c["services"]["node2"].__setitem__("volumes", ["node1-data:/data"]),
    "a sidecar's app listening on all interfaces": lambda c: _swap(_cmd(c, "home-api-envoy"), "--listen=127.0.0.1:8081", "--listen=0.0.0.0:8081"),
    "a sidecar's upstream on another port": lambda c: _swap(_cmd(c, "envoy"), "--upstream=http://127.0.0.1:8081", "--upstream=http://127.0.0.1:8089"),
    "bootstrap to the wrong address": lambda c: _swap(_cmd(c, "node3"), "--bootstrap=/ip4/172.31.70.11/tcp/7101", "--bootstrap=/ip4/172.31.70.12/tcp/7101"),
    "a JWKS URL naming no service": lambda c: _swap(_cmd(c, "home-api"), "--jwks-url=http://node1:7001/.well-known/jwks.json", "--jwks-url=http://node9:7001/.well-known/jwks.json"),
    "an undeclared volume": lambda c: c["volumes"].pop("ca"),
    "an unknown Envoy option": lambda c: _cmd(c, "envoy").append("--jwks-cache=5"),
    "a sidecar variable Flask does not read": lambda c: c["services"]["flask"]["environment"].__setitem__("DIDMESH_JWKS_URL", "x"),
    "a fourth node that cluster.sh does not start": lambda c: c["services"].__setitem__("node4", copy.deepcopy(c["services"]["node3"])),
}


def self_test(compose: dict, dockerfile: str, programs: Programs) -> Report:
    """The checks pass on the file as it is, and catch each mutation."""
    r = Report()
    for name, mutate in MUTATIONS.items():
        broken = copy.deepcopy(compose)
        mutate(broken)
        caught = run_checks(broken, dockerfile, programs, quiet=True).failed
        r.check(bool(caught), f"self-test: {name} is caught" + (f" ({caught[0]})" if caught else ""))
    return r


def main() -> int:
    compose = yaml.safe_load(COMPOSE.read_text())
    dockerfile = DOCKERFILE.read_text()
    programs = Programs()
    print(f"compose_check: {COMPOSE.relative_to(ROOT)} ({len(compose['services'])} services) against {programs.bins}")
    r = run_checks(compose, dockerfile, programs)
    st = self_test(compose, dockerfile, programs)
    r.passed += st.passed
    r.failed += st.failed
    print()
    for what in r.failed:
        print(f"failed: {what}")
    print(f"compose_check: {r.passed} passed, {len(r.failed)} failed")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
