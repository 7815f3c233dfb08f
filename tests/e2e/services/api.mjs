// The demo API behind gatehouse: `GET /api/hello` wants `Authorization: Bearer <token>` and
// checks the token by RFC 7662 introspection at the provider, as client `api`. `/api/live` is
// a WebSocket (the `ws` package) that wants the same on its handshake and echoes messages.
//
// Usage: node services/api.mjs --issuer URL --client-secret S [--port 0] [--cookie-name NAME]
// Prints `READY http://127.0.0.1:PORT`. `GET /_e2e/observed` (asked directly, not through
// gatehouse) tells what it saw: requests, how many carried a bearer token, and whether any
// carried gatehouse's cookie (never should), and short hashes of the valid tokens it saw; under
// `ws`, the WebSocket handshakes it accepted (with a valid token) and the close codes it got.
import { createHash } from 'node:crypto';
import http from 'node:http';
import { parseArgs } from 'node:util';
import { WebSocketServer } from 'ws';

const { values: opt } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    issuer: { type: 'string' },
    'client-secret': { type: 'string' },
    'cookie-name': { type: 'string', default: '__Host-gatehouse' },
  },
});
if (!opt.issuer || !opt['client-secret']) throw new Error('api: --issuer and --client-secret are required');

const metadata = await fetchJson(`${opt.issuer}/.well-known/openid-configuration`);
const basic = `Basic ${Buffer.from(`api:${opt['client-secret']}`).toString('base64')}`;
const observed = {
  requests: 0, bearer: 0, active: 0, sawGatehouseCookie: false, cookieHeaders: 0, tokens: [],
  ws: { refused: 0, accepted: 0, messages: 0, closes: [] },
};
const sockets = new WebSocketServer({ noServer: true });

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, 'http://api.invalid');
    if (url.pathname === '/_e2e/observed') return json(res, 200, observed);
    observed.requests += 1;
    if (req.headers.cookie !== undefined) {
      observed.cookieHeaders += 1;
      if (req.headers.cookie.includes(opt['cookie-name'])) observed.sawGatehouseCookie = true;
    }
    if (url.pathname !== '/api/hello' || req.method !== 'GET') return json(res, 404, { error: 'not_found' });

    const match = /^Bearer ([^\s]+)$/i.exec(req.headers.authorization ?? '');
    if (!match) return unauthorized(res, 'missing bearer token');
    observed.bearer += 1;
    const info = await introspect(match[1]);
    if (!info.active) return unauthorized(res, 'token is not active');
    observed.active += 1;
    // A short hash of each valid token, in order, so the runner can tell a refreshed one.
    observed.tokens.push(createHash('sha256').update(match[1]).digest('hex').slice(0, 16));
    return json(res, 200, { hello: info.sub, client_id: info.client_id, scope: info.scope });
  } catch (err) {
    console.error(`api: ${err.message}`);
    return json(res, 502, { error: 'introspection_failed' });
  }
});
server.on('upgrade', async (req, socket, head) => {
  const refuse = (status) => {
    observed.ws.refused += 1;
    socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
  };
  try {
    if (new URL(req.url, 'http://api.invalid').pathname !== '/api/live') return refuse('404 Not Found');
    if (req.headers.cookie?.includes(opt['cookie-name'])) observed.sawGatehouseCookie = true;
    const match = /^Bearer ([^\s]+)$/i.exec(req.headers.authorization ?? '');
    if (!match || !(await introspect(match[1])).active) return refuse('401 Unauthorized');
    sockets.handleUpgrade(req, socket, head, (ws) => {
      observed.ws.accepted += 1;
      ws.on('message', (data, isBinary) => {
        observed.ws.messages += 1;
        ws.send(data, { binary: isBinary });
      });
      ws.on('close', (code) => observed.ws.closes.push(code));
    });
  } catch (err) {
    console.error(`api: websocket: ${err.message}`);
    refuse('502 Bad Gateway');
  }
});
server.listen(Number(opt.port), '127.0.0.1', () => {
  console.log(`READY http://127.0.0.1:${server.address().port}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => { server.close(); process.exit(0); });

async function introspect(token) {
  const res = await fetch(metadata.introspection_endpoint, {
    method: 'POST',
    headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
    body: new URLSearchParams({ token, token_type_hint: 'access_token' }),
    signal: AbortSignal.timeout(5000),
  });
  if (!res.ok) throw new Error(`introspection answered ${res.status}`);
  return res.json();
}

async function fetchJson(url) {
  const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
  if (!res.ok) throw new Error(`${url} answered ${res.status}`);
  return res.json();
}

function unauthorized(res, message) {
  res.setHeader('www-authenticate', 'Bearer error="invalid_token"');
  return json(res, 401, { error: 'invalid_token', message });
}

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}
