#!/usr/bin/env node
// didmesh JWT sidecar: a reverse proxy that verifies bearer tokens with
// aws-jwt-verify and hands the upstream the verified claims, the same way
// Envoy's jwt_authn does (see ../envoy/envoy.yaml.in):
//
// * no Authorization: Bearer            -> forwarded without claims (public view)
// * a token that verifies               -> forwarded with x-jwt-payload = its payload
//                                          segment (base64url JSON); Authorization dropped
// * a token that does not               -> 401, WWW-Authenticate: Bearer error="invalid_token"
// * the network's keys cannot be fetched -> 503 (the client's token may be fine)
// * x-jwt-payload sent by the client (any spelling) is always removed.
//
// Run: node server.js --upstream http://127.0.0.1:8080 --issuer https://didmesh.local \
//        --audience home-api --jwks-uri https://localhost:7443/.well-known/jwks.json
// (or the DIDMESH_* variables; `node server.js --help`). aws-jwt-verify fetches
// the JWKS over https only: trust a local CA with NODE_EXTRA_CA_CERTS=ca.pem.

import http from "node:http";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { JwtVerifier } from "aws-jwt-verify";
import { FetchError, JwksValidationError, JwtBaseError, JwtInvalidClaimError } from "aws-jwt-verify/error";

export const TRUSTED_HEADER = "x-jwt-payload";
// Same allowance as Envoy's clock_skew_seconds, for clocks that drift between nodes.
const GRACE_SECONDS = 60;
// RFC 9110 §7.6.1: meant for one connection, not to be forwarded.
const HOP_BY_HOP = new Set([
  "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
  "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
]);

const OPTIONS = {
  listen: { env: "DIDMESH_LISTEN", default: "127.0.0.1:10001", help: "HOST:PORT to serve on" },
  upstream: { env: "DIDMESH_UPSTREAM", help: "home-api URL, e.g. http://127.0.0.1:8080" },
  issuer: { env: "DIDMESH_ISSUER", help: "expected iss, e.g. https://didmesh.local" },
  audience: { env: "DIDMESH_AUDIENCE", help: "expected aud, e.g. home-api" },
  "jwks-uri": { env: "DIDMESH_JWKS_URI", help: "the node's https://.../.well-known/jwks.json" },
  "jwks-refresh-seconds": {
    env: "DIDMESH_JWKS_REFRESH_SECONDS", default: "60",
    help: "refetch the JWKS this often: a removed member's key stops working within this",
  },
};

export function loadConfig(argv = process.argv.slice(2), env = process.env) {
  const { values } = parseArgs({
    args: argv,
    options: Object.fromEntries([
      ...Object.keys(OPTIONS).map((name) => [name, { type: "string" }]),
      ["help", { type: "boolean", short: "h" }],
    ]),
  });
  if (values.help) {
    const lines = Object.entries(OPTIONS).map(
      ([name, o]) => `  --${name.padEnd(22)} ${o.help} [env ${o.env}${o.default ? `, default ${o.default}` : ""}]`,
    );
    console.log(`usage: node server.js [options]\n${lines.join("\n")}`);
    process.exit(0);
  }
  const config = {};
  for (const [name, o] of Object.entries(OPTIONS)) {
    const value = values[name] ?? env[o.env] ?? o.default;
    if (value === undefined || value === "") throw new Error(`missing --${name} (or ${o.env})`);
    config[name] = value;
  }
  if (!config["jwks-uri"].startsWith("https://")) {
    // aws-jwt-verify's fetcher is node:https only; fail now rather than on the first token.
    throw new Error("--jwks-uri must be https:// (aws-jwt-verify fetches JWKS over https only)");
  }
  const [, host, port] = /^\[?(.*?)\]?:(\d+)$/.exec(config.listen) ?? [];
  if (!port) throw new Error(`--listen: expected HOST:PORT, got ${config.listen}`);
  return {
    host, port: Number(port),
    upstream: new URL(config.upstream),
    issuer: config.issuer,
    audience: config.audience,
    jwksUri: config["jwks-uri"],
    // At least 1 s: 0 or a non-number would make setInterval spin.
    jwksRefreshMs: Math.max(1, Number(config["jwks-refresh-seconds"]) || 60) * 1000,
  };
}

export function createVerifier({ issuer, audience, jwksUri }) {
  return JwtVerifier.create({
    issuer,
    audience,
    jwksUri,
    graceSeconds: GRACE_SECONDS,
    // aws-jwt-verify checks exp only when present; didmesh tokens always carry it.
    customJwtCheck: ({ payload }) => {
      if (typeof payload.exp !== "number") throw new JwtInvalidClaimError("Token has no exp", payload.exp);
      if (typeof payload.sub !== "string") throw new JwtInvalidClaimError("Token has no sub", payload.sub);
    },
  });
}

/**
 * What follows "Bearer " in the Authorization header (RFC 6750 §2.1), or null
 * when there is no such header or it names another scheme: that request is
 * treated as carrying no token, as Envoy does. Anything after "Bearer " is a
 * token to verify, so garbage there is a 401, not a public view.
 */
export function bearerToken(authorization) {
  const match = /^Bearer +(.*)$/is.exec(authorization ?? "");
  return match ? match[1].trim() : null;
}

function isTrustedHeader(name) {
  // x_jwt_payload reaches a CGI/WSGI upstream as HTTP_X_JWT_PAYLOAD too.
  return name.toLowerCase().replaceAll("_", "-") === TRUSTED_HEADER;
}

function sendJson(res, status, body, headers = {}) {
  const data = JSON.stringify(body);
  res.writeHead(status, { ...headers, "content-type": "application/json", "content-length": Buffer.byteLength(data) });
  res.end(data);
}

export function createProxy({ upstream, verifier, log = console }) {
  const base = upstream.pathname.replace(/\/$/, "");

  async function handle(req, res) {
    if (!req.url.startsWith("/")) {
      return sendJson(res, 400, { error: "invalid_request", reason: "origin-form request target expected" });
    }
    const authorization = req.headers.authorization;
    const token = bearerToken(authorization);
    let payloadSegment = null;
    if (token !== null) {
      try {
        await verifier.verify(token);
        payloadSegment = token.split(".")[1]; // exactly the bytes that were signed, as Envoy forwards them
      } catch (err) {
        if (err instanceof FetchError || err instanceof JwksValidationError) {
          log.error(`jwks unavailable: ${err.message}`);
          return sendJson(res, 503, { error: "temporarily_unavailable", reason: "cannot fetch the network's keys" });
        }
        // Still a 401 (a hostile token must never turn into a 500), but a
        // failure that is not the library's verdict is a bug: say so.
        if (!(err instanceof JwtBaseError)) log.error(`unexpected verification error: ${err.stack}`);
        return sendJson(res, 401, { error: "invalid_token", reason: err.message ?? "invalid token" },
          { "www-authenticate": 'Bearer error="invalid_token"' });
      }
    }

    // Rebuild the headers from the raw list (keeps repeated headers apart).
    const headers = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i];
      const lower = name.toLowerCase();
      if (HOP_BY_HOP.has(lower) || isTrustedHeader(name)) continue;
      if (lower === "authorization" && payloadSegment !== null) continue; // like Envoy's forward: false
      headers.push(name, req.rawHeaders[i + 1]);
    }
    if (payloadSegment !== null) headers.push(TRUSTED_HEADER, payloadSegment);

    const proxied = http.request(
      { protocol: upstream.protocol, hostname: upstream.hostname, port: upstream.port, method: req.method, path: base + req.url, headers },
      (upstreamRes) => {
        const out = [];
        for (let i = 0; i < upstreamRes.rawHeaders.length; i += 2) {
          if (!HOP_BY_HOP.has(upstreamRes.rawHeaders[i].toLowerCase())) out.push(upstreamRes.rawHeaders[i], upstreamRes.rawHeaders[i + 1]);
        }
        res.writeHead(upstreamRes.statusCode, upstreamRes.statusMessage, out);
        upstreamRes.pipe(res);
      },
    );
    proxied.on("error", (err) => {
      log.error(`upstream ${upstream.host}: ${err.message}`);
      if (!res.headersSent) sendJson(res, 502, { error: "bad_gateway", reason: "upstream unavailable" });
      else res.destroy();
    });
    req.pipe(proxied);
  }

  return http.createServer((req, res) => {
    handle(req, res).catch((err) => {
      log.error(`unexpected: ${err.stack}`);
      if (!res.headersSent) sendJson(res, 500, { error: "internal", reason: "internal error" });
    });
  });
}

async function main() {
  const config = loadConfig();
  const verifier = createVerifier(config);
  // Fetch the keys before taking traffic (like Envoy's async_fetch), then now
  // and then: the library alone refetches only on an unknown kid, so without
  // this a removed member's key would be trusted until restart.
  const refresh = () => verifier.hydrate().catch((err) => console.error(`jwks refresh failed: ${err.message}`));
  await refresh();
  setInterval(refresh, config.jwksRefreshMs).unref();

  const server = createProxy({ upstream: config.upstream, verifier });
  server.listen(config.port, config.host, () => {
    console.log(`didmesh jwt sidecar on http://${config.host}:${config.port} -> ${config.upstream.origin}`);
  });
  for (const signal of ["SIGTERM", "SIGINT"]) {
    process.on(signal, () => {
      server.close(() => process.exit(0));
      server.closeIdleConnections();
      setTimeout(() => process.exit(0), 2000).unref();
    });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err) => {
    console.error(`didmesh jwt sidecar: ${err.message}`);
    process.exit(2);
  });
}
