"""Throughput of the four verifiers on the same home endpoint (scripts/bench-verifiers.sh).

The network and the verifiers are those of the interop matrix
(`interop.network.start_all`): a real 2-member network, a real token from
the `didmesh` CLI, and

* `rust`: home-api --auth jwt (the Rust auth-layer in process);
* `envoy`: Envoy jwt_authn -> home-api --auth sidecar (Envoy workers:
  --envoy-concurrency, default 2 = the cores here);
* `aws-jwt-verify`: node server.js (one Node.js process) -> home-api --auth sidecar;
* `flask`: the Flask app under gunicorn (2 gthread workers x 4 threads).

Every verifier gets the same load from the same tool in the same run: `wrk`
with the same `Authorization: Bearer` token, warm-up first, then --rounds
rounds whose order rotates so no verifier always runs on a warmer machine;
the figures are the medians over the rounds.
Each must answer that token 200 naming its DID (checked before, and any
non-2xx under load fails the run). Prints req/s and p99 latency per verifier
and each one's throughput as a ratio to the Rust layer; exits 1 if a target
is missed (Rust >= 3x aws-jwt-verify and >= 1x Envoy, by default).

    python -m interop.bench --bin-dir ../target/release     # from sidecars/
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from interop import jose
from interop.network import SIDECARS, in_work_dir, session, start_all

UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


def parse_wrk(text: str) -> WrkResult:
    """Requests/sec, the 50% and 99% latencies, non-2xx and socket errors of a `wrk --latency` report."""
    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        if not m:
            raise ValueError(f"no {pct}% latency in wrk output:\n{text}")
        return float(m.group(1)) * UNITS_MS[m.group(2)]

    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if not rps:
        raise ValueError(f"no Requests/sec in wrk output:\n{text}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return WrkResult(
        rps=float(rps.group(1)),
        p50_ms=latency("50"),
        p99_ms=latency("99"),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(map(int, sock.groups())) if sock else 0,
    )


def wrk(url: str, token: str, args: argparse.Namespace, duration: str, save: Path | None = None) -> WrkResult:
    # --timeout 10s: wrk's default (2 s) drops slower answers from the
    # latency figures and counts them as socket errors; a slow verifier's
    # p99 must show how slow it is.
    argv = [args.wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}", "--timeout", "10s", "--latency",
            "-H", f"Authorization: Bearer {token}", url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr}")
    if save is not None:
        save.write_text(done.stdout)
    return parse_wrk(done.stdout)


def bench(stack, bins: Path, work: Path, logs: Path, args: argparse.Namespace) -> int:
    env = start_all(stack, bins, work, logs, envoy_concurrency=args.envoy_concurrency, flask_server="gunicorn")
    print(env.described)

    # Each must really verify: the token -> 200 with its DID; a tampered one -> 401.
    head, payload, sig = env.token.split(".")
    bad_sig = bytearray(jose.b64url_decode(sig))
    bad_sig[0] ^= 0xFF
    tampered = f"{head}.{payload}.{jose.b64url(bytes(bad_sig))}"
    http = session()
    for name, url in env.verifiers.items():
        ok = http.get(url, headers={"Authorization": f"Bearer {env.token}"}, timeout=5)
        if ok.status_code != 200 or ok.json().get("user") != env.did:
            print(f"bench: {name} did not accept the token: {ok.status_code} {ok.text[:200]}", file=sys.stderr)
            return 2
        bad = http.get(url, headers={"Authorization": f"Bearer {tampered}"}, timeout=5)
        if bad.status_code != 401:
            print(f"bench: {name} did not refuse a tampered token: {bad.status_code}", file=sys.stderr)
            return 2

    names = list(env.verifiers)
    print(f"\nwrk -t{args.threads} -c{args.connections} -d{args.duration} (warm-up {args.warmup}), "
          f"{args.rounds} round(s), {os.cpu_count()} cores, same token everywhere")
    for name in names:
        wrk(env.verifiers[name], env.token, args, args.warmup)
    runs: dict[str, list[WrkResult]] = {name: [] for name in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            report = logs / f"wrk-{name}-{r + 1}.txt"
            result = wrk(env.verifiers[name], env.token, args, args.duration, save=report)
            if result.non_2xx or result.socket_errors:
                print(f"bench: {name} round {r + 1}: {result.non_2xx} non-2xx, {result.socket_errors} socket errors "
                      f"(wrk's report: {report})", file=sys.stderr)
                return 1
            runs[name].append(result)
            print(f"  round {r + 1} {name:<15} {result.rps:>10.0f} req/s  p99 {result.p99_ms:8.2f} ms", flush=True)

    # Medians over the rounds: one round disturbed by something else on the
    # machine moves a mean (and a worst-of) far more than a median.
    mean = {n: statistics.median(x.rps for x in rs) for n, rs in runs.items()}
    p99 = {n: statistics.median(x.p99_ms for x in rs) for n, rs in runs.items()}
    p50 = {n: statistics.median(x.p50_ms for x in rs) for n, rs in runs.items()}
    rust = mean["rust"]
    print()
    print(f"{'verifier':<16}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'vs rust':>10}{'rust is':>10}")
    for n in names:
        print(f"{n:<16}{mean[n]:>10.0f}{p50[n]:>10.2f}{p99[n]:>10.2f}{mean[n] / rust:>9.2f}x{rust / mean[n]:>9.2f}x")
    print("(median over the rounds; 'vs rust': this req/s / rust req/s; 'rust is': rust req/s / this req/s)")

    targets = {"aws-jwt-verify": args.target_aws, "envoy": args.target_envoy}
    missed = []
    for n, target in targets.items():
        got = rust / mean[n]
        verdict = "ok" if got >= target else "MISSED"
        print(f"target: rust >= {target:g}x {n}: {got:.2f}x {verdict}")
        if got < target:
            missed.append(n)
    if args.json:
        Path(args.json).write_text(json.dumps({
            n: {"rps": mean[n], "p50_ms": p50[n], "p99_ms": p99[n], "rust_over_this": rust / mean[n],
                "rounds": [vars(x) for x in runs[n]]} for n in names}, indent=2))
    return 1 if missed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interop.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin-dir", type=Path,
                        default=Path(os.environ.get("DIDMESH_BIN_DIR", SIDECARS.parent / "target/release")),
                        help="release binaries [DIDMESH_BIN_DIR, else target/release]")
    parser.add_argument("--duration", default="10s", help="wrk -d per round (default 10s)")
    parser.add_argument("--warmup", default="2s", help="wrk -d of the warm-up (default 2s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per verifier; figures are medians (default 3)")
    parser.add_argument("--connections", type=int, default=64, help="wrk -c (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="wrk -t (default 1)")
    parser.add_argument("--envoy-concurrency", type=int, default=os.cpu_count() or 2,
                        help="Envoy worker threads (default: the number of cores)")
    parser.add_argument("--target-aws", type=float, default=3.0, help="rust / aws-jwt-verify req/s at least (3)")
    parser.add_argument("--target-envoy", type=float, default=1.0, help="rust / envoy req/s at least (1)")
    parser.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return in_work_dir("bench", args, bench)


if __name__ == "__main__":
    sys.exit(main())
