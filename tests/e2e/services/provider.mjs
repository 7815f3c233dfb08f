// A real OpenID Provider for the e2e suite: panva's oidc-provider with its built-in
// (development) login, consent and logout pages. Access tokens live 4 s, refresh tokens
// rotate, and ending a session at the provider POSTs a logout token to gatehouse.
//
// Usage: node services/provider.mjs --gatehouse http://127.0.0.1:GH --bff-secret S --api-secret S
//        [--port 0] [--issued-file FILE]
// Prints `READY http://localhost:PORT` once it listens on 127.0.0.1 (and ::1 when it can).
// With --issued-file, every code and token it hands out is appended there (one JSON line each),
// so the runner can check that gatehouse never logs them. Refresh grants and back-channel
// logout deliveries are printed as `EVENT ...` lines.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import http from 'node:http';
import { parseArgs } from 'node:util';
import Provider from 'oidc-provider';

const { values: opt } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    gatehouse: { type: 'string' },
    'bff-secret': { type: 'string' },
    'api-secret': { type: 'string' },
    'issued-file': { type: 'string' },
  },
});
for (const name of ['gatehouse', 'bff-secret', 'api-secret']) {
  if (!opt[name]) throw new Error(`provider: --${name} is required`);
}

// Listen first: the issuer URL needs the port.
const servers = [http.createServer()];
await listen(servers[0], Number(opt.port), '127.0.0.1');
const { port } = servers[0].address();
// "localhost" may resolve to ::1 first (Chromium does that itself); answer there too if we can.
const v6 = http.createServer();
if (await listen(v6, port, '::1').then(() => true, () => false)) servers.push(v6);

const issuer = `http://localhost:${port}`;
const signingKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
  .export({ format: 'jwk' });

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'bff',
      client_secret: opt['bff-secret'],
      token_endpoint_auth_method: 'client_secret_basic',
      redirect_uris: [`${opt.gatehouse}/auth/callback`],
      post_logout_redirect_uris: [`${opt.gatehouse}/`],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      scope: 'openid profile email offline_access',
      // OP-initiated logout reaches gatehouse directly; with session_required, ID tokens and
      // logout tokens carry `sid`. (oidc-provider accepts http:// URIs for web clients.)
      backchannel_logout_uri: `${opt.gatehouse}/auth/backchannel-logout`,
      backchannel_logout_session_required: true,
    },
    {
      // The demo API: a resource server that only introspects tokens.
      client_id: 'api',
      client_secret: opt['api-secret'],
      token_endpoint_auth_method: 'client_secret_basic',
      redirect_uris: [],
      grant_types: [],
      response_types: [],
    },
  ],
  jwks: { keys: [{ ...signingKey, kid: 'e2e-rs256', alg: 'RS256', use: 'sig' }] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  claims: {
    openid: ['sub'],
    profile: ['name'],
    email: ['email', 'email_verified'],
  },
  scopes: ['openid', 'offline_access'],
  // Put the profile/email claims in the ID token too, so the user's claims do not depend on
  // whether gatehouse calls UserInfo.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  // Short-lived access tokens, so the run sees gatehouse refresh them (after half their
  // lifetime, ~2 s); each refresh rotates the refresh token.
  ttl: { AccessToken: 4, IdToken: 600, RefreshToken: 3600, Grant: 3600, Session: 3600, Interaction: 600 },
  features: {
    devInteractions: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    backchannelLogout: { enabled: true },
  },
  // oidc-provider drops offline_access unless the request says prompt=consent; issue a
  // refresh token to the bff client whenever it may use the grant.
  rotateRefreshToken: true,
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  findAccount: async (_ctx, sub) => ({
    accountId: sub,
    claims: async () => ({
      sub,
      name: `Test User ${sub}`,
      email: `${sub}@example.test`,
      email_verified: true,
    }),
  }),
  clientBasedCORS: () => false,
  // oidc-provider's outgoing requests refuse loopback and private addresses (SSRF protection,
  // in development mode too). Lift that for gatehouse's origin only, so the back-channel
  // logout POST can reach http://127.0.0.1:GH; every other URL keeps the protection.
  fetch: (url, options) => {
    if (new URL(url).origin !== new URL(opt.gatehouse).origin) return globalThis.fetch(url, options);
    const { dispatcher: _ssrfGuard, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
});

if (opt['issued-file']) provider.use(recordIssued(opt['issued-file']));
for (const event of ['server_error', 'grant.error', 'authorization.error', 'end_session.error',
  'introspection.error', 'revocation.error', 'userinfo.error']) {
  provider.on(event, (_ctx, err) => console.error(`provider ${event}: ${err.name}: ${err.message}${err.error_description ? ` (${err.error_description})` : ''}`));
}

// Lines the runner counts: every refresh grant and every back-channel logout delivery.
provider.on('grant.success', (ctx) => {
  if (ctx.oidc.params?.grant_type === 'refresh_token') console.log('EVENT refresh_token.grant');
});
provider.on('backchannel.success', (_ctx, client, _sub, sid) => console.log(`EVENT backchannel.success ${client.clientId} sid=${sid ? 'yes' : 'no'}`));
provider.on('backchannel.error', (_ctx, err, client) => console.error(`EVENT backchannel.error ${client.clientId}: ${err.message}`));

for (const server of servers) server.on('request', provider.callback());
console.log(`READY ${issuer}`);

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    for (const server of servers) server.close();
    process.exit(0);
  });
}

function listen(server, p, host) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(p, host, () => { server.off('error', reject); resolve(); });
  });
}

// Koa middleware: after each response, note the codes and tokens it carries.
function recordIssued(file) {
  return async (ctx, next) => {
    await next();
    const found = [];
    const location = ctx.response.get('location');
    if (location) {
      const code = new URL(location, issuer).searchParams.get('code');
      if (code) found.push(['code', code]);
    }
    if (ctx.body && typeof ctx.body === 'object' && !Buffer.isBuffer(ctx.body)) {
      for (const kind of ['access_token', 'refresh_token', 'id_token']) {
        if (typeof ctx.body[kind] === 'string') found.push([kind, ctx.body[kind]]);
      }
    }
    for (const [kind, value] of found) appendFileSync(file, `${JSON.stringify({ kind, value })}\n`);
  };
}
