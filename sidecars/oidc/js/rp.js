#!/usr/bin/env node
// A relying party on openid-client (npm), in two steps, so that a test can
// play the browser in between:
//
//   node rp.js authorize --issuer URL --client-id ID --redirect-uri URI \
//       [--alg ES256] --session FILE
//     -> prints {"authorization_url": ...}; keeps the PKCE verifier, state
//        and nonce in FILE (what a web app keeps in its session)
//   node rp.js callback  (same flags) --callback-url URL
//     -> redeems the code, verifies the ID token, calls /userinfo, prints
//        {"claims", "userinfo", "id_token", "token_type", "expires_in"}
//
// DIDMESH_OIDC_CLIENT_SECRET set: a confidential client (client_secret_post);
// unset: a public client (PKCE only, token_endpoint_auth_method none).
// Any refusal prints {"error", "message", "code", "cause"} and exits 1.
// openid-client checks what RFC 6749, RFC 7636, RFC 9207 and OIDC Core ask
// of a relying party: state, the `iss` of the answer, the ID token's alg
// (the client's id_token_signed_response_alg), signature (JWKS), iss, aud,
// exp, iat, nonce, and that /userinfo names the same sub.
import { readFileSync, writeFileSync } from 'node:fs';
import * as client from 'openid-client';

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || argv[i + 1] === undefined) throw new Error(`bad argument ${argv[i]}`);
    out[argv[i].slice(2)] = argv[i + 1];
  }
  for (const need of ['issuer', 'client-id', 'redirect-uri', 'session']) {
    if (!out[need]) throw new Error(`--${need} is needed`);
  }
  return out;
}

async function main() {
  const [step, ...rest] = process.argv.slice(2);
  const args = parseArgs(rest);
  const secret = process.env.DIDMESH_OIDC_CLIENT_SECRET;
  const config = await client.discovery(
    new URL(args.issuer),
    args['client-id'],
    { id_token_signed_response_alg: args.alg ?? 'RS256', redirect_uris: [args['redirect-uri']] },
    secret ? client.ClientSecretPost(secret) : client.None(),
    // A loopback cluster speaks plain HTTP; openid-client refuses that unless told.
    { execute: [client.allowInsecureRequests], timeout: 10 },
  );
  if (step === 'authorize') {
    const verifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const nonce = client.randomNonce();
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: args['redirect-uri'],
      scope: 'openid',
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
      nonce,
    });
    writeFileSync(args.session, JSON.stringify({ verifier, state, nonce }), { mode: 0o600 });
    return { authorization_url: url.href };
  }
  if (step === 'callback') {
    if (!args['callback-url']) throw new Error('--callback-url is needed');
    const kept = JSON.parse(readFileSync(args.session, 'utf8'));
    const tokens = await client.authorizationCodeGrant(config, new URL(args['callback-url']), {
      pkceCodeVerifier: kept.verifier,
      expectedState: kept.state,
      expectedNonce: kept.nonce,
      idTokenExpected: true,
    });
    const claims = tokens.claims();
    const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
    return {
      claims,
      userinfo,
      id_token: tokens.id_token,
      token_type: tokens.token_type,
      expires_in: tokens.expiresIn(),
    };
  }
  throw new Error(`unknown step ${step} (authorize or callback)`);
}

try {
  process.stdout.write(JSON.stringify(await main()) + '\n');
} catch (err) {
  process.stdout.write(JSON.stringify({
    error: err.name,
    message: err.message,
    code: err.code,
    cause: err.cause && typeof err.cause === 'object' ? { ...err.cause, message: err.cause.message } : err.cause,
  }) + '\n');
  process.exitCode = 1;
}
