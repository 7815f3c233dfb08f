// The demo SPA behind gatehouse: one static page (spa/index.html), no tokens, no secrets.
//
// Usage: node services/spa.mjs [--port 0]; prints `READY http://127.0.0.1:PORT`.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { parseArgs } from 'node:util';

const { values: opt } = parseArgs({ options: { port: { type: 'string', default: '0' } } });
const page = readFileSync(new URL('../spa/index.html', import.meta.url));

const server = http.createServer((req, res) => {
  const { pathname } = new URL(req.url, 'http://spa.invalid');
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD' });
    return res.end();
  }
  if (pathname !== '/' && pathname !== '/index.html') {
    res.writeHead(404, { 'content-type': 'text/plain' });
    return res.end('not found\n');
  }
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-cache' });
  return res.end(req.method === 'HEAD' ? undefined : page);
});
server.listen(Number(opt.port), '127.0.0.1', () => {
  console.log(`READY http://127.0.0.1:${server.address().port}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => { server.close(); process.exit(0); });
