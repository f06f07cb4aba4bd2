#!/usr/bin/env python3
"""Render envoy.yaml.in into the front door's Envoy config.

The front door is one plain-HTTP address (the network's issuer, e.g.
http://localhost:7000) in front of every member node, round robin, retrying
on another node when a node cannot be reached. Standard library only.

    python3 render.py --listen 127.0.0.1:7000 \
        --upstream http://127.0.0.1:7001 --upstream http://127.0.0.1:7002 \
        --upstream https://127.0.0.1:7003 --upstream-ca ca.pem

An https upstream (a node started with --tls-cert) is reached over TLS,
its certificate checked against --upstream-ca and its name against the
URL's host; the others over plain HTTP.
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


def upstream(url: str) -> tuple[str, str, int]:
    """(scheme, IP, port) of a node URL. An IP literal only: the cluster is
    STATIC, so a name would need DNS, and a node is on a fixed address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise argparse.ArgumentTypeError(f"expected http(s)://IP:PORT, got {url!r}")
    try:
        ipaddress.ip_address(parts.hostname)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the front door takes node IP addresses, not names: {url!r}") from None
    return parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def tls_socket(ca_file: str) -> dict:
    """UpstreamTlsContext checking a node's certificate against `ca_file`.
    Nodes are named by IP, so the SAN checked is that IP (Envoy matches an
    IP SAN against the endpoint only through this explicit matcher)."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": {
                "validation_context": {"trusted_ca": {"filename": str(Path(ca_file).resolve())}},
            },
        },
    }


def render(args: argparse.Namespace) -> str:
    listen_host, listen_port = args.listen
    admin_host, admin_port = args.admin
    nodes = args.upstream
    if not nodes:
        raise SystemExit("render.py: at least one --upstream is needed")
    tls_hosts = sorted({host for scheme, host, _ in nodes if scheme == "https"})
    if tls_hosts and not args.upstream_ca:
        raise SystemExit("render.py: an https --upstream needs --upstream-ca (the CA that signed the node's certificate)")
    endpoints = []
    for scheme, host, port in nodes:
        endpoint = {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
        if scheme == "https":
            # Picks the `tls` entry of transport_socket_matches for this node only.
            endpoint["metadata"] = {"filter_metadata": {"envoy.transport_socket_match": {"tls": True}}}
        endpoints.append(endpoint)
    matches = ""
    if tls_hosts:
        socket = tls_socket(args.upstream_ca)
        # The node's certificate must name the IP it is reached on.
        socket["typed_config"]["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"] = [
            {"san_type": "IP_ADDRESS", "matcher": {"exact": h}} for h in tls_hosts
        ]
        matches = "transport_socket_matches: " + json.dumps(
            [{"name": "tls", "match": {"tls": True}, "transport_socket": socket}])
    q = json.dumps  # a JSON value is a valid YAML flow value, whatever it holds
    return Template(TEMPLATE.read_text()).substitute(
        LISTEN_HOST=q(listen_host),
        LISTEN_PORT=listen_port,
        ADMIN_HOST=q(admin_host),
        ADMIN_PORT=admin_port,
        ENDPOINTS=q(endpoints),
        TRANSPORT_SOCKET_MATCHES=matches,
        # Every other node once; at least one retry so a lone restarting
        # node's refused connection is tried again.
        NUM_RETRIES=max(1, len(nodes) - 1),
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    env = os.environ.get
    p.add_argument("--listen", type=host_port, default=env("DIDMESH_FRONTDOOR_LISTEN", "127.0.0.1:7000"),
                   help="HOST:PORT the front door serves on [env DIDMESH_FRONTDOOR_LISTEN, default 127.0.0.1:7000]")
    p.add_argument("--admin", type=host_port, default=env("DIDMESH_FRONTDOOR_ADMIN", "127.0.0.1:9700"),
                   help="HOST:PORT of Envoy's admin page, keep it on loopback "
                        "[env DIDMESH_FRONTDOOR_ADMIN, default 127.0.0.1:9700]")
    default_nodes = [u for u in env("DIDMESH_FRONTDOOR_UPSTREAMS", "").split(",") if u]
    p.add_argument("--upstream", type=upstream, action="append",
                   default=[upstream(u) for u in default_nodes],
                   help="a node's URL, e.g. http://127.0.0.1:7001 (repeat for every node) "
                        "[env DIDMESH_FRONTDOOR_UPSTREAMS, comma-separated]")
    p.add_argument("--upstream-ca", default=env("DIDMESH_FRONTDOOR_UPSTREAM_CA"),
                   help="PEM CA file for https upstreams [env DIDMESH_FRONTDOOR_UPSTREAM_CA]")
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
