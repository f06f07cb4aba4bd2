#!/usr/bin/env python3
"""Render envoy.yaml.in into an Envoy config for one home-api instance.

Every option also reads an environment variable (shown in --help), the same
names the aws-jwt-verify sidecar uses. Standard library only.

    python3 render.py --listen 127.0.0.1:10000 --upstream http://127.0.0.1:8080 \
        --issuer https://didmesh.local --audience home-api \
        --jwks-uri https://localhost:7443/.well-known/jwks.json --jwks-ca ca.pem
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
from pathlib import Path
from string import Template
from urllib.parse import urlsplit

TEMPLATE = Path(__file__).with_name("envoy.yaml.in")


def host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def url_host_port(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SystemExit(f"render.py: not an http(s) URL: {url!r}")
    return parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def tls_transport_socket(host: str, ca_file: str) -> str:
    """One-line (flow style) UpstreamTlsContext that checks the node's
    certificate against `ca_file` and its name against `host`."""
    san_type = "IP_ADDRESS" if is_ip(host) else "DNS"
    socket = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            **({} if is_ip(host) else {"sni": host}),
            "common_tls_context": {
                "validation_context": {
                    "trusted_ca": {"filename": str(Path(ca_file).resolve())},
                    "match_typed_subject_alt_names": [{"san_type": san_type, "matcher": {"exact": host}}],
                }
            },
        },
    }
    return "transport_socket: " + json.dumps(socket)


def render(args: argparse.Namespace) -> str:
    listen_host, listen_port = args.listen
    admin_host, admin_port = args.admin
    _, upstream_host, upstream_port = url_host_port(args.upstream)
    jwks_scheme, jwks_host, jwks_port = url_host_port(args.jwks_uri)
    if jwks_scheme == "https":
        if not args.jwks_ca:
            raise SystemExit("render.py: an https JWKS URI needs --jwks-ca (the CA that signed the node's certificate)")
        transport = tls_transport_socket(jwks_host, args.jwks_ca)
    else:
        transport = ""
    q = json.dumps  # a JSON string is a valid YAML scalar, whatever it holds
    return Template(TEMPLATE.read_text()).substitute(
        LISTEN_HOST=q(listen_host),
        LISTEN_PORT=listen_port,
        ADMIN_HOST=q(admin_host),
        ADMIN_PORT=admin_port,
        UPSTREAM_HOST=q(upstream_host),
        UPSTREAM_PORT=upstream_port,
        ISSUER=q(args.issuer),
        AUDIENCE=q(args.audience),
        JWKS_URI=q(args.jwks_uri),
        JWKS_HOST=q(jwks_host),
        JWKS_PORT=jwks_port,
        JWKS_TRANSPORT_SOCKET=transport,
        CACHE_DURATION=q(f"{args.cache_duration}s"),
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    env = os.environ.get

    def opt(flag, var, help, **kw):
        default = env(var, kw.pop("default", None))  # strings: argparse applies type=
        p.add_argument(flag, default=default, required=default is None and kw.pop("required", True),
                       help=f"{help} [env {var}]", **kw)

    opt("--listen", "DIDMESH_LISTEN", "HOST:PORT Envoy serves on", type=host_port, default="127.0.0.1:10000")
    opt("--admin", "DIDMESH_ENVOY_ADMIN", "HOST:PORT of Envoy's admin page (keep it on loopback)", type=host_port,
        default="127.0.0.1:9901")
    opt("--upstream", "DIDMESH_UPSTREAM", "home-api URL, e.g. http://127.0.0.1:8080")
    opt("--issuer", "DIDMESH_ISSUER", "expected iss, e.g. https://didmesh.local")
    opt("--audience", "DIDMESH_AUDIENCE", "expected aud, e.g. home-api")
    opt("--jwks-uri", "DIDMESH_JWKS_URI", "the node's /.well-known/jwks.json (http or https)")
    opt("--jwks-ca", "DIDMESH_JWKS_CA", "PEM CA file that signed the node's certificate (https only)", required=False)
    opt("--cache-duration", "DIDMESH_JWKS_CACHE_SECONDS", "seconds a fetched JWKS is used before refetching",
        type=int, default="60")
    p.add_argument("--out", help="write here instead of stdout")
    return p


def main() -> None:
    args = parser().parse_args()
    config = render(args)
    if args.out:
        Path(args.out).write_text(config)
    else:
        sys.stdout.write(config)


if __name__ == "__main__":
    main()
