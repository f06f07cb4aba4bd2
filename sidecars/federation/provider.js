#!/usr/bin/env node
// A real OpenID provider for the federation tests: panva's `oidc-provider`
// (an OpenID-certified implementation), one instance per process, with one
// client registration and a NON-interactive login, so that a test can play
// the browser with a plain HTTP client.
//
//   node provider.js --port 9001 --issuer http://localhost:9001 --alg ES256 \
//     --client-id didmesh --redirect-uri http://localhost:7001/federation/acme/callback \
//     [--redirect-uri …] [--keys FILE]          # client secret: env FED_CLIENT_SECRET
//
// * Signing keys: one key of --alg (RS256: RSA 2048; ES256: P-256), made at
//   start with node:crypto. With --keys FILE they are read from FILE when it
//   exists and written there otherwise, so a restarted provider (the tests
//   stop one to check "provider down") keeps its `kid`. The JWKS and the
//   discovery document list only that key and that alg.
// * Login: the authorization endpoint sends the browser to /interaction/UID,
//   which finishes the login at once for the account the flow names:
//   `login_hint` on the authorization request (the test adds it to the URL
//   the node redirected to), else the account last set with
//   `POST /test/account {"sub": …}`; neither → 400. `login_hint=!deny` ends
//   the flow with `access_denied` (a user who cancels). Consent for `openid`
//   is granted in the same step. Nothing else is asked.
// * Accounts exist on demand: any sub is an account; its claims are `sub`
//   and, for the `email` scope, `<sub>@example.test`.
//
// Prints `listening: ISSUER` once it serves. Ends on SIGTERM/SIGINT.

import { randomBytes, generateKeyPairSync, createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    issuer: { type: 'string' },
    alg: { type: 'string', default: 'RS256' },
    'client-id': { type: 'string' },
    'redirect-uri': { type: 'string', multiple: true },
    keys: { type: 'string' },
  },
});

function fail(message) {
  process.stderr.write(`provider.js: ${message}\n`);
  process.exit(2);
}

const port = Number(args.port);
if (!Number.isInteger(port) || port <= 0 || port > 65535) fail('--port PORT is required');
if (!args.issuer) fail('--issuer URL is required');
if (!['RS256', 'ES256'].includes(args.alg)) fail('--alg must be RS256 or ES256');
if (!args['client-id']) fail('--client-id is required');
if (!args['redirect-uri']?.length) fail('at least one --redirect-uri is required');
const clientSecret = process.env.FED_CLIENT_SECRET;
if (!clientSecret) fail('the client secret goes in the environment: FED_CLIENT_SECRET');

/** One private signing JWK of `alg`, with an RFC 7638-style kid. */
function makeKey(alg) {
  const { privateKey } = alg === 'RS256'
    ? generateKeyPairSync('rsa', { modulusLength: 2048 })
    : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = privateKey.export({ format: 'jwk' });
  const members = alg === 'RS256' ? { e: jwk.e, kty: 'RSA', n: jwk.n } : { crv: jwk.crv, kty: 'EC', x: jwk.x, y: jwk.y };
  const kid = createHash('sha256').update(JSON.stringify(members)).digest('base64url');
  return { ...jwk, kid, alg, use: 'sig' };
}

function loadKeys() {
  if (args.keys && existsSync(args.keys)) {
    const stored = JSON.parse(readFileSync(args.keys, 'utf8'));
    if (stored.keys?.[0]?.alg !== args.alg) fail(`${args.keys} holds no ${args.alg} key`);
    return stored;
  }
  const jwks = { keys: [makeKey(args.alg)] };
  if (args.keys) writeFileSync(args.keys, JSON.stringify(jwks), { mode: 0o600 });
  return jwks;
}

// The account the next login signs in, when the flow names none.
let testAccount = null;

const configuration = {
  clients: [{
    client_id: args['client-id'],
    client_secret: clientSecret,
    redirect_uris: args['redirect-uri'],
    response_types: ['code'],
    grant_types: ['authorization_code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: args.alg,
  }],
  jwks: loadKeys(),
  enabledJWA: { idTokenSigningAlgValues: [args.alg] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  scopes: ['openid', 'email'],
  pkce: { required: () => true },
  // Explicit lifetimes (the library asks for them); ID tokens live an hour.
  ttl: { AccessToken: 3600, AuthorizationCode: 60, IdToken: 3600, Interaction: 600, Session: 3600, Grant: 3600 },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return { sub, email: `${sub}@example.test`, email_verified: true };
      },
    };
  },
  // Errors as JSON, not an HTML page (the tests read them).
  async renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },
};

const provider = new Provider(args.issuer, configuration);
// The issuer is plain http on loopback: no proxy, no TLS in front.
provider.proxy = false;

async function readJson(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 4096) throw new Error('body too large');
    chunks.push(chunk);
  }
  return JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
}

provider.use(async (ctx, next) => {
  if (ctx.method === 'POST' && ctx.path === '/test/account') {
    try {
      const body = await readJson(ctx.req);
      if (typeof body.sub !== 'string' || !body.sub || body.sub.length > 255) throw new Error('sub must be a string');
      testAccount = body.sub;
      ctx.body = { account: testAccount };
    } catch (e) {
      ctx.status = 400;
      ctx.body = { error: 'invalid_request', reason: String(e.message) };
    }
    return;
  }
  const m = /^\/interaction\/([A-Za-z0-9_-]+)$/.exec(ctx.path);
  if (ctx.method === 'GET' && m) {
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    const hint = details.params.login_hint;
    let result;
    if (hint === '!deny') {
      result = { error: 'access_denied', error_description: 'the user cancelled the sign-in' };
    } else if (details.prompt.name === 'login') {
      const sub = hint || testAccount;
      if (!sub) {
        ctx.status = 400;
        ctx.body = { error: 'no_account', reason: 'no login_hint and no POST /test/account' };
        return;
      }
      result = { login: { accountId: sub } };
    } else if (details.prompt.name === 'consent') {
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
      grant.addOIDCScope('openid');
      result = { consent: { grantId: await grant.save() } };
    } else {
      ctx.status = 400;
      ctx.body = { error: 'unexpected_prompt', reason: details.prompt.name };
      return;
    }
    const to = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
    ctx.status = 303;
    ctx.redirect(to);
    return;
  }
  await next();
});

const server = provider.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening: ${args.issuer} (${args.alg}, kid ${configuration.jwks.keys[0].kid})\n`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => { server.close(() => process.exit(0)); server.closeAllConnections(); });
}
