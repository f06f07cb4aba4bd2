#!/usr/bin/env python3
"""docker-compose.yml checked without a Docker engine (scripts/compose-check.sh).

Every command, flag, port and volume of the compose file is checked against
what the programs accept (their `--help`, run here), the Dockerfile, and
scripts/cluster.sh, which starts the same cluster without Docker:

* commands: each program is installed in the image target its service
  builds; each `--flag` is in that program's --help; each DIDMESH_* or
  HOME_API_* variable is one the program reads;
* ports: published on 127.0.0.1 under the same number, exactly the ports
  listened on 0.0.0.0; a sidecar's app shares the sidecar's network
  namespace, listens on loopback where the sidecar's --upstream points;
* cluster.sh: as many nodes, node i on HTTP 700i and libp2p 710i, home-api
  on its port with its audience, nodes 2.. bootstrapping from node 1, one
  issuer, `init-network --nodes` = the node count;
* names, not addresses: no fixed container address or subnet; nodes
  bootstrap from /dns4/node1/tcp/7101 and announce /dns4/<service>/tcp/<port>;
  a host port given by a variable (${VAR:-default}, checked with its default)
  is the same variable in the node's --public-url; nodes drop TCP
  connections to a silent peer within seconds (net.ipv4.tcp_retries2);
* volumes and references: each node's --data-dir is its own volume, the one
  `init` writes its folder into; every file a flag names is in a mounted
  volume; volumes are declared and mount points exist in the runtime image;
  URLs name a service listening there, https exactly when it has --tls-cert;
* the checks themselves: each mutation in MUTATIONS (a typical mistake) must
  make a check fail.

Binaries from $DIDMESH_BIN_DIR, else target/debug, else target/release.
Prints the failures and `N passed, M failed`; exit 1 on any failure.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv/bin/python") if (ROOT / ".venv/bin/python").exists() else sys.executable
LISTEN = {"didmesh-node": ["--http-addr", "--p2p-addr"], "home-api": ["--listen"],
          "envoy": ["--listen", "--admin"], "server.js": ["--listen"], "gunicorn": ["--bind"]}
FILE_FLAGS = ["--data-dir", "--tls-cert", "--tls-key", "--jwks-ca", "--genesis"]
FILE_ENVS = ["NODE_EXTRA_CA_CERTS", "DIDMESH_JWKS_CA", "DIDMESH_TLS_CERT", "DIDMESH_TLS_KEY"]


INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(value):
    """The compose file as the engine reads it with none of its variables
    set: each ${VAR:-default} / ${VAR-default} becomes its default (a ${VAR}
    without one becomes "", as compose makes it, and fails the checks that
    need a value)."""
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, str):
        return INTERPOLATION.sub(lambda m: m.group(2) or "", value)
    return value


def bin_dir() -> Path:
    dirs = [Path(os.environ["DIDMESH_BIN_DIR"])] if os.environ.get("DIDMESH_BIN_DIR") else \
        [ROOT / "target" / p for p in ("debug", "release")]
    for d in dirs:
        if (d / "didmesh-node").exists() and (d / "home-api").exists():
            return d
    sys.exit(f"compose_check: no didmesh-node and home-api in {' or '.join(map(str, dirs))} "
             "(cargo build -p didmesh-node -p home-api)")


class Programs:
    """The --help text of each program a service runs, asked once."""

    def __init__(self) -> None:
        bins = bin_dir()
        self.argv = {"didmesh-node": [str(bins / "didmesh-node")], "home-api": [str(bins / "home-api")],
                     "envoy": [PY, str(ROOT / "sidecars/envoy/render.py")],  # run.sh hands its flags to render.py
                     "server.js": [shutil.which("node") or "node", str(ROOT / "sidecars/aws-jwt-verify/server.js")],
                     "gunicorn": [PY, "-m", "gunicorn"]}
        self.cache: dict[tuple, str] = {}
        commands = self.help(("didmesh-node",)).split("Commands:", 1)[-1].split("Options:", 1)[0]
        self.subcommands = set(re.findall(r"^  ([a-z][a-z-]*)\s", commands, re.M)) - {"help"}

    def help(self, key: tuple) -> str:
        if key not in self.cache:
            done = subprocess.run(self.argv[key[0]] + list(key[1:]) + ["--help"], capture_output=True, text=True, timeout=60)
            if done.returncode != 0:
                sys.exit(f"compose_check: {key} --help failed:\n{done.stderr}")
            self.cache[key] = done.stdout + done.stderr
        return self.cache[key]

    def flags(self, key: tuple) -> set[str]:
        return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", self.help(key)))

    def key(self, argv: list[str]) -> tuple | None:
        """Which --help a command line is checked against (None: not ours)."""
        name = Path(argv[0]).name
        if name == "didmesh-node":
            sub = next((a for a in argv[1:] if not a.startswith("-")), None)
            return (name, sub) if sub in self.subcommands else (name,)
        if name in ("home-api", "gunicorn"):
            return (name,)
        if argv[0] == "/sidecars/envoy/run.sh":
            return ("envoy",)
        if name == "node" and argv[1:2] and argv[1].endswith("/server.js"):
            return ("server.js",)
        return None


def flags_of(argv: list[str]) -> dict[str, list[str]]:
    """{--flag: [values]} from `--flag=value` and `--flag value` (a switch: "")."""
    out: dict[str, list[str]] = {}
    for i, a in enumerate(argv):
        if a.startswith("--"):
            name, eq, value = a.partition("=")
            if not eq and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                value = argv[i + 1]
            out.setdefault(name, []).append(value)
    return out


def one(flags: dict, flag: str) -> str | None:
    return flags[flag][-1] if flags.get(flag) else None


def commands_of(argv: list[str]) -> list[list[str]]:
    """The simple commands a service runs (an `sh -c` script split on ; && || |)."""
    if argv[:1] != ["sh"]:
        return [argv]
    cmds: list[list[str]] = [[]]
    for line in argv[-1].splitlines():
        for w in shlex.split(line, comments=True) + [";"]:
            if w in (";", "&&", "||", "|"):
                cmds.append([])
            else:
                cmds[-1].append(w)
    return [c for c in cmds if c]


def host_port(addr: str) -> tuple[str, int] | None:
    m = re.fullmatch(r"/ip[46]/([^/]+)/tcp/(\d+)(?:/p2p/\w+)?", addr) or re.fullmatch(r"\[?([^\]]*)\]?:(\d+)", addr)
    return (m.group(1), int(m.group(2))) if m else None


class Service:
    def __init__(self, name: str, spec: dict, programs: Programs) -> None:
        cmd = spec.get("command", [])
        self.name, self.spec = name, spec
        self.argv = shlex.split(cmd) if isinstance(cmd, str) else [str(a) for a in cmd]
        self.key = programs.key(self.argv) if self.argv else None
        self.flags = flags_of(self.argv)
        addrs = {f: host_port(one(self.flags, f) or "") for f in LISTEN.get((self.key or ("",))[0], [])}
        self.listens = {f: hp for f, hp in addrs.items() if hp}
        self.mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in spec.get("volumes", [])}
        env = spec.get("environment") or {}
        self.env = {k: str(v) for k, v in (dict(e.split("=", 1) for e in env) if isinstance(env, list) else env).items()}
        self.profiles = set(spec.get("profiles", []))
        build = spec.get("build") or {}
        self.target = build.get("target") if isinstance(build, dict) else None

    def ports(self) -> set[int]:
        return {p for _, p in self.listens.values()}

    def in_volume(self, path: str) -> bool:
        return any(path == t or path.startswith(t.rstrip("/") + "/") for t in self.mounts)


class Checks:
    """Counts passed checks and keeps what failed; a check returns its result."""

    def __init__(self) -> None:
        self.passed, self.failed = 0, []

    def __call__(self, ok: bool, what: str) -> bool:
        self.passed += bool(ok)
        if not ok:
            self.failed.append(what)
        return bool(ok)


def dockerfile_targets(text: str) -> dict[str, tuple[set[str], str]]:
    """target -> (programs it installs, its text): the binaries the build stage
    copies out, COPYs to /usr/local/bin or /sidecars, pip's gunicorn, the base
    image's interpreter, and the shell."""
    built = set(re.findall(r"target/release/([\w-]+)", text))
    out = {}
    for base, name, body in re.findall(r"^FROM\s+(\S+)\s+AS\s+(\S+)\n(.*?)(?=^FROM\s|\Z)", text, re.M | re.S):
        progs = {"sh", "test", "cp"} | (built if "COPY --from=build /out/ /usr/local/bin/" in body else set())
        for src, dst in re.findall(r"^COPY\s+(?!--)(\S+)\s+(\S+)\s*$", body, re.M):
            if dst.startswith("/usr/local/bin/"):
                progs.add(Path(dst).name)
            if dst.startswith("/sidecars/") and (ROOT / src).is_dir():
                progs |= {f"{dst.rstrip('/')}/{f.name}" for f in (ROOT / src).iterdir()}
        if re.search(r"pip install[^\n]*gunicorn", body):
            progs.add("gunicorn")
        progs |= {"node:": {"node"}, "python:": {"python", "python3"}}.get(base.split(":")[0] + ":", set())
        out[name] = (progs, body)
    return out


def cluster_sh() -> dict:
    """The layout scripts/cluster.sh starts: read from its definitions."""
    text = (ROOT / "scripts/cluster.sh").read_text()
    want = {"nodes": r"local n=(\d+) with=", "http": r"http_port\(\) \{ echo \$\(\((\d+) \+ \$1\)\)",
            "p2p": r"p2p_port\(\) \{ echo \$\(\((\d+) \+ \$1\)\)", "app": r"APP_ADDR=\$\{APP_ADDR:-[\d.]+:(\d+)\}",
            "audience": r"^AUDIENCE=(\S+)"}
    found = {k: re.search(p, text, re.M) for k, p in want.items()}
    if not all(found.values()):
        sys.exit(f"compose_check: scripts/cluster.sh no longer defines {[k for k, m in found.items() if not m]}")
    return {k: m.group(1) if k == "audience" else int(m.group(1)) for k, m in found.items()}


def run_checks(raw: dict, dockerfile: str, programs: Programs, c: Checks) -> None:
    compose = interpolate(raw)
    s = {n: Service(n, spec, programs) for n, spec in compose["services"].items()}
    images = dockerfile_targets(dockerfile)
    mount_points = {p for m in re.findall(r"mkdir -p ([^&\n\\]+)", images.get("runtime", (set(), ""))[1]) for p in m.split()}
    local_ca = (ROOT / "sidecars/testkit/local-ca.sh").read_text()
    flask_app = (ROOT / "sidecars/flask/home_app.py").read_text()

    def env_reader(x: Service) -> tuple[str, str]:
        """What reads a service's environment: its program, or local-ca.sh for init."""
        if x.key == ("gunicorn",):
            return "home_app.py", flask_app
        return (x.key[0], programs.help(x.key)) if x.key else ("local-ca.sh", local_ca)
    for x in s.values():
        # --- commands, flags, environment
        installed, stage = images.get(x.target, (set(), ""))
        c(x.target in images, f"{x.name}: builds Dockerfile target {x.target!r}")
        c(bool(x.argv), f"{x.name}: has a command")
        for argv in commands_of(x.argv) if x.argv else []:
            c(argv[0] in installed, f"{x.name}: `{argv[0]}` is installed in target {x.target}")
            key = programs.key(argv)
            unknown = sorted(set(flags_of(argv)) - programs.flags(key)) if key else []
            c(not unknown, f"{x.name}: flags of `{' '.join(filter(None, key or ()))}` exist in its --help {unknown or ''}")
        for path in [a for a in x.argv if a.startswith("/sidecars/")]:
            c((ROOT / path[1:]).exists(), f"{x.name}: {path} is in the repo")
            c(bool(re.search(rf"^(COPY\s.*\s{re.escape(str(Path(path).parent))}|WORKDIR\s+{re.escape(str(Path(path).parent))}\s*$)",
                             stage, re.M)), f"{x.name}: target {x.target} has {path}")
        for var in [v for v in x.env if v.startswith(("DIDMESH_", "HOME_API_", "LOCAL_CA_"))]:
            reader, text = env_reader(x)
            c(re.search(rf"\b{var}\b", text) is not None, f"{x.name}: {var} is read by {reader}")
        if x.key == ("gunicorn",):
            module, _, factory = x.argv[-1].partition(":")
            src = ROOT / (one(x.flags, "--chdir") or "").lstrip("/") / f"{module}.py"
            c(src.exists() and f"def {factory.rstrip('()')}(" in src.read_text(), f"{x.name}: app {x.argv[-1]} exists")
        # --- ports
        if x.key and x.key[0] in LISTEN:
            c(LISTEN[x.key[0]][0] in x.listens, f"{x.name}: {LISTEN[x.key[0]][0]} is given")
        published = set()
        for p in x.spec.get("ports", []):
            host, hport, cport = (str(p).split(":") + ["", ""])[:3]
            c(host == "127.0.0.1" and hport == cport.split("/")[0], f"{x.name}: {p} is published on 127.0.0.1 as is")
            published.add(int(str(p).split(":")[-1].split("/")[0]))
        open_ports = {p for h, p in x.listens.values() if h in ("0.0.0.0", "::")}
        c(published == open_ports, f"{x.name}: published {sorted(published)} = listened on 0.0.0.0 {sorted(open_ports)}")
        mode = x.spec.get("network_mode", "")
        if mode.startswith("service:"):
            owner = s.get(mode.split(":", 1)[1])
            if c(owner is not None, f"{x.name}: network_mode {mode} names a service"):
                up = urlsplit(one(owner.flags, "--upstream") or "")
                c(bool(x.listens) and all(h == "127.0.0.1" for h, _ in x.listens.values()), f"{x.name}: loopback only")
                c(up.hostname == "127.0.0.1" and up.port in x.ports(), f"{x.name}: listens where {owner.name}'s --upstream points")
                c(not x.ports() & owner.ports() and "ports" not in x.spec, f"{x.name}: no clash in {owner.name}'s namespace")
                c(x.profiles == owner.profiles, f"{x.name}: in {owner.name}'s profiles")
        # --- volumes and references
        for target, volume in x.mounts.items():
            c(volume in (compose.get("volumes") or {}), f"{x.name}: volume {volume} is declared")
            if x.target == "runtime":
                c(target in mount_points, f"{x.name}: mount point {target} exists in the runtime image")
        for path in [p for f in FILE_FLAGS for p in x.flags.get(f, [])] + [x.env[v] for v in FILE_ENVS if v in x.env]:
            c(path.startswith("/sidecars/") or x.in_volume(path), f"{x.name}: {path} is in a mounted volume")
        deps = x.spec.get("depends_on", [])
        for dep in deps if isinstance(deps, list) else list(deps):
            c(dep in s and s[dep].profiles <= x.profiles, f"{x.name}: depends_on {dep} exists within its profiles")
        urls = [u for f in ("--jwks-url", "--jwks-uri", "--upstream") for u in x.flags.get(f, [])]
        for url in urls + [v for k, v in x.env.items() if k == "DIDMESH_JWKS_URI"]:
            u = urlsplit(url)
            if u.hostname == "127.0.0.1":
                continue  # a sidecar's app, checked with the ports
            t = s.get(u.hostname or "")
            if c(t is not None, f"{x.name}: {url} names a service"):
                port = u.port or (443 if u.scheme == "https" else 80)
                c(port in t.ports() and t.profiles <= x.profiles, f"{x.name}: {t.name} listens on {port}")
                c((u.scheme == "https") == ("--tls-cert" in t.flags), f"{x.name}: {url} matches {t.name}'s TLS")
                if u.scheme == "https":
                    c(bool(one(x.flags, "--jwks-ca") or x.env.get("NODE_EXTRA_CA_CERTS") or x.env.get("DIDMESH_JWKS_CA")),
                      f"{x.name}: trusts a CA for {url}")
                    c(any(f"DNS:{u.hostname}" in y.env.get("LOCAL_CA_EXTRA_SAN", "") for y in s.values()),
                      f"{x.name}: the certificate names {u.hostname}")
    check_cluster(s, compose, c)
    check_names(s, raw, compose, c)


def check_cluster(s: dict[str, Service], compose: dict, c: Checks) -> None:
    """The compose cluster is the one cluster.sh starts."""
    sh = cluster_sh()
    nodes = {n: x for n, x in s.items() if x.key == ("didmesh-node",)}
    c(sorted(nodes) == [f"node{i}" for i in range(1, sh["nodes"] + 1)], f"nodes {sorted(nodes)}: cluster.sh starts {sh['nodes']}")
    for name, x in nodes.items():
        i = int(name.removeprefix("node"))
        http, p2p = (x.listens.get(f, ("", 0))[1] for f in ("--http-addr", "--p2p-addr"))
        c(http == sh["http"] + i and p2p == sh["p2p"] + i, f"{name}: HTTP {http} and libp2p {p2p} as in cluster.sh")
        scheme = "https" if "--tls-cert" in x.flags else "http"
        c(one(x.flags, "--public-url") == f"{scheme}://127.0.0.1:{http}", f"{name}: --public-url is how the host reaches it")
        boots, want = x.flags.get("--bootstrap", []), f"/dns4/node1/tcp/{sh['p2p'] + 1}"
        c(not boots if i == 1 else any(b == want or b.startswith(want + "/p2p/") for b in boots),
          f"{name}: bootstraps from node1 by name, as cluster.sh from node 1 {boots}")
    apps = [x for x in s.values() if x.key == ("home-api",) and one(x.flags, "--auth") in (None, "jwt")]
    c(len(apps) == 1, "one home-api with the Rust auth-layer (--auth jwt)")
    for x in apps:
        c(x.listens.get("--listen", ("", 0))[1] == sh["app"], f"{x.name}: on port {sh['app']} as in cluster.sh")
        c(one(x.flags, "--audience") == sh["audience"], f"{x.name}: --audience {sh['audience']} as in cluster.sh")
    inits = [(x, flags_of(a)) for x in s.values() for a in commands_of(x.argv) if a[:2] == ["didmesh-node", "init-network"]]
    if c(len(inits) == 1, "one service runs `didmesh-node init-network`"):
        init, flags = inits[0]
        c(one(flags, "--nodes") == str(len(nodes)), f"init-network --nodes {one(flags, '--nodes')} = {len(nodes)} nodes")
        volumes = [x.mounts.get(one(x.flags, "--data-dir") or "") for x in nodes.values()]
        c(None not in volumes and len(set(volumes)) == len(volumes), f"each node's --data-dir is a volume of its own: {volumes}")
        for (name, _), volume in zip(nodes.items(), volumes):
            c(volume is not None and init.mounts.get(f"{one(flags, '--out')}/{name}") == volume, f"init writes {name}'s folder into {volume}")
        issuers = {one(flags, "--issuer")} | {one(x.flags, "--issuer") for x in s.values() if "--issuer" in x.flags} \
            | {x.env["DIDMESH_ISSUER"] for x in s.values() if "DIDMESH_ISSUER" in x.env}
        c(len(issuers) == 1 and None not in issuers, f"one issuer everywhere: {issuers}")
    for profile in ("envoy", "aws-jwt-verify", "flask"):
        c(any(profile in x.profiles for x in s.values()), f"profile {profile} has services")
    c({"init", "node1", "home-api"} <= {n for n, x in s.items() if not x.profiles}, "init, node1, home-api need no profile")


def check_names(s: dict[str, Service], raw: dict, compose: dict, c: Checks) -> None:
    """Services reach each other by name: no fixed addresses, /dns4 names
    that are services listening there, and host-port variables that agree."""
    for name, x in s.items():
        nets = x.spec.get("networks") or {}
        fixed = [n for n, v in nets.items() if isinstance(v, dict) and ("ipv4_address" in v or "ipv6_address" in v)] \
            if isinstance(nets, dict) else []
        c(not fixed, f"{name}: no fixed address on {fixed}")
    for net, spec in (compose.get("networks") or {}).items():
        c(not (spec or {}).get("ipam"), f"network {net}: no fixed subnet (addresses from the engine's pool)")
    for name, x in s.items():
        if x.key != ("didmesh-node",):
            continue
        p2p = x.listens.get("--p2p-addr", ("", 0))[1]
        # A peer that lost its address must be given up on within seconds,
        # or the node never redials it by name (scripts/compose-run.sh).
        retries = (x.spec.get("sysctls") or {}).get("net.ipv4.tcp_retries2")
        c(retries is not None and int(retries) <= 8, f"{name}: net.ipv4.tcp_retries2 {retries} gives up on a silent peer in seconds")
        announce = x.flags.get("--announce", [])
        c(announce == [f"/dns4/{name}/tcp/{p2p}"], f"{name}: announces /dns4/{name}/tcp/{p2p}, its name and port {announce}")
        for addr in x.flags.get("--bootstrap", []) + announce:
            m = re.fullmatch(r"/dns4?/([^/]+)/tcp/(\d+)(?:/p2p/\w+)?", addr)
            t = s.get(m.group(1)) if m else None
            c(t is not None and t.key == ("didmesh-node",) and t.listens.get("--p2p-addr", ("", 0))[1] == int(m.group(2)),
              f"{name}: {addr} names a node service by name, on its libp2p port")
        # A wallet signs a login only for the URL it talks to: the host port
        # a variable publishes must be the port of the node's public URL.
        raw_argv = raw["services"][name].get("command", [])
        raw_url = next((a.split("=", 1)[1] for a in raw_argv if isinstance(a, str) and a.startswith("--public-url=")), "")
        http = x.listens.get("--http-addr", ("", 0))[1]
        raw_ports = [str(p) for p in raw["services"][name].get("ports", []) if str(p).endswith(f":{http}")]
        url_port = m.group(1) if (m := re.fullmatch(r"https?://[^/:]+:(.+?)/?", raw_url)) else None
        host_ports = [m.group(1) for p in raw_ports if (m := re.fullmatch(r"(?:[\d.]+:)?(.+):\d+", p))]
        c(url_port is not None and host_ports == [url_port],
          f"{name}: --public-url port {url_port} is the host port published for {http} {host_ports}")


def swap(argv: list, old: str, new: str) -> None:
    argv[argv.index(old)] = new


def cmd(c: dict, name: str) -> list:
    return c["services"][name]["command"]


# Each mistake must make at least one check fail, or the checks are vacuous.
MUTATIONS = {
    "a flag the node does not have": lambda c: cmd(c, "node1").append("--http-adress=0.0.0.0:7001"),
    "a home-api flag that does not exist": lambda c: cmd(c, "home-api").append("--jwks-ca=/ca/ca.pem"),
    "an init-network flag that does not exist": lambda c: cmd(c, "init").__setitem__(-1, cmd(c, "init")[-1].replace("--nodes 3", "--node-count 3")),
    "node2 on another HTTP port than cluster.sh": lambda c: swap(cmd(c, "node2"), "--http-addr=0.0.0.0:7002", "--http-addr=0.0.0.0:7012"),
    "a listener not published": lambda c: c["services"]["node1"]["ports"].pop(),
    "a published port nobody listens on": lambda c: c["services"]["home-api"]["ports"].append("127.0.0.1:9090:9090"),
    "a port published on all interfaces": lambda c: c["services"]["home-api"].__setitem__("ports", ["8080:8080"]),
    "node3 without TLS while verifiers use https": lambda c: [cmd(c, "node3").remove(a) for a in list(cmd(c, "node3")) if a.startswith("--tls-")],
    "a data dir outside any volume": lambda c: swap(cmd(c, "node2"), "--data-dir=/data", "--data-dir=/var/lib/didmesh"),
    "two nodes on one data volume": lambda c: c["services"]["node2"].__setitem__("volumes", ["node1-data:/data"]),
    "a sidecar's app listening on all interfaces": lambda c: swap(cmd(c, "home-api-envoy"), "--listen=127.0.0.1:8081", "--listen=0.0.0.0:8081"),
    "a sidecar's upstream on another port": lambda c: swap(cmd(c, "envoy"), "--upstream=http://127.0.0.1:8081", "--upstream=http://127.0.0.1:8089"),
    "bootstrap to the wrong port": lambda c: swap(cmd(c, "node3"), "--bootstrap=/dns4/node1/tcp/7101", "--bootstrap=/dns4/node1/tcp/7102"),
    "bootstrap to a fixed address": lambda c: swap(cmd(c, "node2"), "--bootstrap=/dns4/node1/tcp/7101", "--bootstrap=/ip4/172.31.70.11/tcp/7101"),
    "a bootstrap name that is no service": lambda c: swap(cmd(c, "node2"), "--bootstrap=/dns4/node1/tcp/7101", "--bootstrap=/dns4/nodel/tcp/7101"),
    "a node announcing another's name": lambda c: swap(cmd(c, "node3"), "--announce=/dns4/node3/tcp/7103", "--announce=/dns4/node2/tcp/7103"),
    "a node announcing nothing": lambda c: cmd(c, "node2").remove("--announce=/dns4/node2/tcp/7102"),
    "a node keeping dead connections for 15 minutes": lambda c: c["services"]["node2"].__setitem__("sysctls", {}),
    "a fixed container address": lambda c: c["services"]["node1"].__setitem__("networks", {"mesh": {"ipv4_address": "172.31.70.11"}}),
    "a fixed subnet": lambda c: c["networks"].__setitem__("mesh", {"ipam": {"config": [{"subnet": "172.31.70.0/24"}]}}),
    "a public URL on another port variable than the published port": lambda c: swap(
        cmd(c, "node2"), "--public-url=http://127.0.0.1:${DIDMESH_PUBLISH_HTTP2:-7002}", "--public-url=http://127.0.0.1:${DIDMESH_PUBLISH_HTTP1:-7002}"),
    "a JWKS URL naming no service": lambda c: swap(cmd(c, "home-api"), "--jwks-url=http://node1:7001/.well-known/jwks.json", "--jwks-url=http://node9:7001/.well-known/jwks.json"),
    "an undeclared volume": lambda c: c["volumes"].pop("ca"),
    "an unknown Envoy option": lambda c: cmd(c, "envoy").append("--jwks-cache=5"),
    "a sidecar variable Flask does not read": lambda c: c["services"]["flask"]["environment"].__setitem__("DIDMESH_JWKS_URL", "x"),
    "a fourth node that cluster.sh does not start": lambda c: c["services"].__setitem__("node4", copy.deepcopy(c["services"]["node3"])),
    "a mount point missing from the runtime image": lambda c: c["services"]["node3"]["volumes"].append("tls:/secrets"),
}


def main() -> int:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    dockerfile = (ROOT / "Dockerfile").read_text()
    programs = Programs()
    c = Checks()
    run_checks(compose, dockerfile, programs, c)
    for what, mutate in MUTATIONS.items():
        broken = copy.deepcopy(compose)
        mutate(broken)
        caught = Checks()
        run_checks(broken, dockerfile, programs, caught)
        c(bool(caught.failed), f"self-test: {what} is caught" + (f" ({caught.failed[0]})" if caught.failed else ""))
    for what in c.failed:
        print(f"FAIL {what}")
    print(f"compose_check: docker-compose.yml ({len(compose['services'])} services) against {bin_dir()}: "
          f"{c.passed} passed, {len(c.failed)} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
