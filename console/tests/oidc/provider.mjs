// A real OpenID Connect provider for the console's sign-in tests: panva's
// oidc-provider (OpenID Certified), one confidential client, a few staff
// accounts with passwords and `groups`, PKCE required, RP-initiated logout.
// Started by console/tests/sso.rs on a free port of 127.0.0.1; prints
// "ready <issuer>" on stdout once listening. Configured by environment:
//
//   OIDC_PORT                 port to listen on (127.0.0.1 only)
//   OIDC_CLIENT_ID            the console's client id
//   OIDC_CLIENT_SECRET        its secret
//   OIDC_REDIRECT_URI         the console's /auth/callback
//   OIDC_POST_LOGOUT_URI      where the provider sends the browser after sign-out
//   OIDC_ID_TOKEN_TTL_S       ID token lifetime (short, for the expiry test)
//
// The sign-in page is this script's own (login + password checked against
// USERS), not oidc-provider's development pages, which accept any password.

import crypto from 'node:crypto';
import http from 'node:http';
import Provider from 'oidc-provider';

const env = (k) => {
  const v = process.env[k];
  if (!v) {
    console.error(`missing ${k}`);
    process.exit(2);
  }
  return v;
};

const port = Number(env('OIDC_PORT'));
const issuer = `http://127.0.0.1:${port}`;

// Staff of the city: login -> password, display name, groups.
const USERS = {
  kim: { password: 'kim-password-1', name: '김민지', groups: ['waterworks-clerks', 'all-staff'] },
  park: { password: 'park-password-1', name: 'Park Operator', groups: ['waterworks-operators'] },
  lee: { password: 'lee-password-1', name: '이도서', groups: ['library-staff'] },
};

// A signing key of this process only (oidc-provider's quick-start keys are
// public): a restarted provider has rotated its key, as a real one does.
const signingKey = {
  ...crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }),
  kid: crypto.randomUUID(),
  use: 'sig',
  alg: 'RS256',
};

const provider = new Provider(issuer, {
  jwks: { keys: [signingKey] },
  clients: [{
    client_id: env('OIDC_CLIENT_ID'),
    client_secret: env('OIDC_CLIENT_SECRET'),
    redirect_uris: [env('OIDC_REDIRECT_URI')],
    post_logout_redirect_uris: [env('OIDC_POST_LOGOUT_URI')],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  // The ID token carries the scopes' claims (the console reads the role
  // claim from it, not from userinfo).
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  ttl: {
    IdToken: Number(env('OIDC_ID_TOKEN_TTL_S')),
    AccessToken: Number(env('OIDC_ID_TOKEN_TTL_S')),
    AuthorizationCode: 60,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
  },
  cookies: { keys: ['waterworks-test-provider-cookie-key-0001'] },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: { enabled: true },
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const u = USERS[id];
    if (!u) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, name: u.name, preferred_username: id, groups: u.groups };
      },
    };
  },
});

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function loginPage(uid, error) {
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>City sign-in</title></head><body>
<h1>City sign-in</h1>${error ? `<p id="error">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}">
<input name="login" id="login" required><input name="password" id="password" type="password" required>
<button type="submit" id="submit">Sign in</button></form></body></html>`;
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 16384) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

// Sign-in: check the password, then grant the scopes and claims asked for
// (staff sign in to the city's own console: no consent screen).
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt, params } = details;
  if (req.method === 'GET' && prompt.name === 'login') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(loginPage(uid));
    return;
  }
  let accountId = details.session?.accountId;
  if (prompt.name === 'login') {
    const form = await readForm(req);
    const login = form.get('login') || '';
    const u = USERS[login];
    if (!u || u.password !== form.get('password')) {
      res.writeHead(401, { 'content-type': 'text/html; charset=utf-8' });
      res.end(loginPage(uid, 'wrong login or password'));
      return;
    }
    accountId = login;
  }
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId, clientId: params.client_id });
  grant.addOIDCScope(String(params.scope));
  grant.addOIDCClaims(['sub', 'name', 'preferred_username', 'groups']);
  const grantId = await grant.save();
  const result = { consent: { grantId } };
  if (prompt.name === 'login') result.login = { accountId };
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
}

const callback = provider.callback();
const server = http.createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((e) => {
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end(`interaction failed: ${e.message}`);
    });
    return;
  }
  callback(req, res);
});
server.listen(port, '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
