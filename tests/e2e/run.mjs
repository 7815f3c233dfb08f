#!/usr/bin/env node
// gatehouse end to end: a real OpenID Provider (oidc-provider), a demo API and SPA, gatehouse in
// front of them, and headless Chromium that logs in, calls the API, sees gatehouse refresh the
// 4-second access token (once, however many requests), is logged out by the provider over the
// back channel, logs in again, opens a WebSocket from the page through gatehouse, and logs out
// through gatehouse in another tab, which closes that socket.
//
// Usage:  GATEHOUSE_BIN=target/debug/gatehouse node tests/e2e/run.mjs
// Env:    REDIS_URL (default redis://127.0.0.1:6379), CHROMIUM (default /usr/bin/chromium),
//         GATEHOUSE_LOG (default debug: the more gatehouse logs, the more the leak check sees)
// Prints one line per step; exits 0 when all passed, 1 with the failed step and the services'
// output otherwise. Everything it starts is stopped before it exits; its temp dir (config,
// logs, screenshot) is kept and printed.
import { randomBytes } from 'node:crypto';
import { accessSync, constants, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { freePort, sleep, startService, stopAll, waitFor, withTimeout } from './lib/proc.mjs';
import { deleteKeys, redis } from './lib/redis.mjs';

const COOKIE = '__Host-gatehouse';
const BUDGET_MS = 40_000; // the whole run; cleanup adds at most ~10 s
const REFRESH_WAIT_MS = 2500; // > half the provider's 4 s access-token lifetime: gatehouse refreshes
const WAIT_MS = 10_000; // any single browser wait
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

const here = fileURLToPath(new URL('.', import.meta.url));
const cfg = {
  gatehouseBin: process.env.GATEHOUSE_BIN,
  redisUrl: process.env.REDIS_URL || 'redis://127.0.0.1:6379',
  chromium: process.env.CHROMIUM || '/usr/bin/chromium',
  // hex, not base64url: a secret starting with '-' would read as an option on a command line
  bffSecret: randomBytes(24).toString('hex'),
  apiSecret: randomBytes(24).toString('hex'),
  sessionKey: randomBytes(32).toString('base64'),
  redisPrefix: `gatehouse-e2e-${randomBytes(6).toString('hex')}:`,
  login: `alice-${randomBytes(3).toString('hex')}`,
};
const tmp = mkdtempSync(join(tmpdir(), 'gatehouse-e2e-'));
const issuedFile = join(tmp, 'issued.jsonl');
const services = [];
const browserTrail = [];
let browser = null;
let stepNo = 0;
let currentStep = 'start';

async function main() {
  const s = {}; // what the steps learn: URLs, services, the page, the cookie

  await step('preflight: gatehouse binary, Chromium, Redis', async () => {
    if (!cfg.gatehouseBin) throw new Error('GATEHOUSE_BIN is not set (cargo build, then GATEHOUSE_BIN=target/debug/gatehouse)');
    accessSync(cfg.gatehouseBin, constants.X_OK);
    accessSync(cfg.chromium, constants.X_OK);
    const [pong] = await redis(cfg.redisUrl, [['PING']]).catch((err) => {
      throw new Error(`${err.message}; start Redis (scripts/test.sh does) or set REDIS_URL`);
    });
    return `redis ${pong}, temp dir ${tmp}`;
  });

  s.gh = `http://127.0.0.1:${await freePort()}`;
  await step('OpenID Provider (oidc-provider) is up', async () => {
    s.provider = await start('provider', process.execPath, [join(here, 'services/provider.mjs'),
      '--gatehouse', s.gh, '--bff-secret', cfg.bffSecret, '--api-secret', cfg.apiSecret, '--issued-file', issuedFile]);
    s.op = s.provider.url;
    return s.op;
  });

  await step('demo API and SPA are up', async () => {
    s.api = await start('api', process.execPath, [join(here, 'services/api.mjs'),
      '--issuer', s.op, '--client-secret', cfg.apiSecret, '--cookie-name', COOKIE]);
    s.spa = await start('spa', process.execPath, [join(here, 'services/spa.mjs')]);
    return `api ${s.api.url}, spa ${s.spa.url}`;
  });

  await step('gatehouse is ready (GET /readyz = 200)', async () => {
    const configFile = join(tmp, 'gatehouse.toml');
    writeFileSync(configFile, gatehouseConfig(s), { mode: 0o600 });
    s.gatehouse = await startService('gatehouse', cfg.gatehouseBin, ['--config', configFile], {
      dir: tmp, env: { GATEHOUSE_LOG: process.env.GATEHOUSE_LOG || 'debug', NO_COLOR: '1' },
    });
    services.push(s.gatehouse);
    await Promise.race([s.gatehouse.died(), waitFor(async () => {
      const res = await fetch(`${s.gh}/readyz`, { signal: AbortSignal.timeout(1000) })
        .catch((err) => { throw new Error(`GET /readyz: ${err.cause?.code ?? err.message}`); });
      if (res.status !== 200) throw new Error(`/readyz answered ${res.status}`);
      return true;
    }, { timeoutMs: 15_000, what: `${s.gh}/readyz` })]);
    return s.gh;
  });

  await step('without a session: /auth/user and /api/ answer 401 JSON, set no cookie, reach no upstream', async () => {
    for (const path of ['/auth/user', '/api/hello']) {
      const res = await http(`${s.gh}${path}`);
      expect(res.status === 401, `GET ${path} answered ${res.status}, want 401`);
      expect(res.json && typeof res.json.error === 'string', `GET ${path}: want a JSON body with "error", got ${res.type} ${res.text.slice(0, 200)}`);
      expect(res.setCookie.length === 0, `GET ${path} set cookies (${res.setCookie.join(' | ')}); API answers must not start logins`);
    }
    const seen = await observed(s);
    expect(seen.requests === 0, `the API received ${seen.requests} unauthenticated request(s)`);
  });

  await step('browser: the SPA through gatehouse offers "Log in"', async () => {
    browser = await chromium.launchPersistentContext(join(tmp, 'chromium-profile'), {
      executablePath: cfg.chromium, headless: true, args: CHROMIUM_ARGS, timeout: 15_000,
      viewport: { width: 900, height: 640 }, handleSIGINT: false, handleSIGTERM: false, handleSIGHUP: false,
    });
    // Nothing may leave the machine (the provider's pages import a web font).
    await browser.route((url) => !isLocal(url), (route) => route.abort('blockedbyclient'));
    s.page = browser.pages()[0] ?? await browser.newPage();
    s.page.setDefaultTimeout(WAIT_MS);
    s.page.setDefaultNavigationTimeout(WAIT_MS);
    s.page.on('framenavigated', (frame) => { if (frame === s.page.mainFrame()) browserTrail.push(`navigated to ${withoutQuery(frame.url())}`); });
    s.page.on('console', (msg) => {
      if (msg.type() === 'error' && !msg.text().includes('ERR_BLOCKED_BY_CLIENT')) browserTrail.push(`console error: ${msg.text()}`);
    });
    s.page.on('pageerror', (err) => browserTrail.push(`page error: ${err.message}`));
    await s.page.goto(`${s.gh}/`);
    await expectSpaState(s.page, 'signed-out');
  });

  await logIn(s, 'click "Log in": the provider asks for credentials (cross-site, on localhost)');

  await step('consent, then back on the SPA as the user', async () => {
    await consentAndReturn(s);
    s.screenshot = join(tmp, 'logged-in.png');
    await s.page.screenshot({ path: s.screenshot, fullPage: true });
    return `screenshot ${s.screenshot}`;
  });

  await step(`the ${COOKIE} cookie is HttpOnly, Secure, SameSite=Strict, host-only and hidden from scripts`, async () => {
    const cookies = await browser.cookies(s.gh);
    const cookie = cookies.find((c) => c.name === COOKIE);
    expect(cookie, `no ${COOKIE} cookie in the browser; it has: ${cookies.map((c) => c.name).join(', ') || 'none'}`);
    expect(cookie.httpOnly === true, 'cookie is not HttpOnly');
    expect(cookie.secure === true, 'cookie is not Secure');
    expect(cookie.sameSite === 'Strict', `cookie SameSite is ${cookie.sameSite}`);
    expect(cookie.path === '/' && cookie.domain === '127.0.0.1', `cookie path/domain is ${cookie.path} / ${cookie.domain}`);
    expect(COOKIE.length + cookie.value.length < 4096, `cookie is ${cookie.value.length} bytes`);
    const documentCookie = await s.page.evaluate(() => document.cookie);
    expect(!documentCookie.includes(COOKIE), 'document.cookie shows the session cookie');
    s.cookieValue = cookie.value;

    const user = await s.page.evaluate(() => fetch('/auth/user', { headers: { 'X-CSRF': '1' } })
      .then(async (r) => ({ status: r.status, text: await r.text() })));
    expect(user.status === 200, `GET /auth/user from the page answered ${user.status}`);
    const u = JSON.parse(user.text);
    const now = Date.now() / 1000;
    expect(u.sub === cfg.login && u.claims?.email === `${cfg.login}@example.test`, `/auth/user: ${user.text}`);
    expect(u.expires_at > now && u.idle_expires_at > now, `/auth/user expiry is not in the future: ${user.text}`);
    expect(/^\/auth\/logout\?sid=[^&]+/.test(u.logout_url), `/auth/user logout_url: ${u.logout_url}`);
    expectNoIssuedValue(`${user.text}\n${await s.page.content()}`, 'the SPA page or /auth/user');

    // Control for the replay check after logout: the same request from outside the browser works now.
    const replay = await http(`${s.gh}/auth/user`, { cookie: `${COOKIE}=${s.cookieValue}` });
    expect(replay.status === 200, `the cookie sent from Node got ${replay.status} from /auth/user, want 200`);
    return `other cookies: ${cookies.filter((c) => c !== cookie).map((c) => c.name).join(', ') || 'none'}`;
  });

  await step('click "Call API": the API saw a valid bearer token (introspection)', async () => {
    s.refreshes = refreshCount(s);
    const text = await callApi(s);
    s.firstToken = (await observed(s)).tokens.at(-1);
    return text;
  });

  await step(`${REFRESH_WAIT_MS / 1000} s later, "Call API" again: 200 as the same user, with a refreshed access token`, async () => {
    await sleep(REFRESH_WAIT_MS);
    const before = refreshCount(s);
    await callApi(s);
    const token = (await observed(s)).tokens.at(-1);
    expect(token !== s.firstToken, 'the API saw the same access token again; gatehouse did not refresh it');
    const refreshed = refreshCount(s) - before;
    expect(refreshed === 1, `the provider saw ${refreshed} refresh grant(s) for this call, want 1`);
    const rotated = readIssued().filter((i) => i.kind === 'refresh_token');
    expect(new Set(rotated.map((i) => i.value)).size >= 2, `the provider issued ${rotated.length} refresh token(s); rotation is on, want >= 2`);
    s.lastToken = token;
    return `${refreshCount(s) - s.refreshes} refresh grant(s) since the first call`;
  });

  await step(`${REFRESH_WAIT_MS / 1000} s later, 6 parallel fetches from the page: all 200, one refresh, one new token`, async () => {
    await sleep(REFRESH_WAIT_MS);
    const before = refreshCount(s);
    const seenBefore = (await observed(s)).tokens.length;
    const statuses = await s.page.evaluate(() => Promise.all(Array.from({ length: 6 }, () => fetch('/api/hello', { headers: { 'X-CSRF': '1' } })
      .then(async (r) => `${r.status} ${await r.text()}`))));
    for (const st of statuses) {
      expect(st.startsWith('200 ') && JSON.parse(st.slice(4)).hello === cfg.login, `a parallel fetch answered ${st}`);
    }
    const refreshed = refreshCount(s) - before;
    expect(refreshed === 1, `the provider saw ${refreshed} refresh grant(s) for 6 parallel requests of one session, want exactly 1`);
    const tokens = new Set((await observed(s)).tokens.slice(seenBefore));
    expect(tokens.size === 1 && !tokens.has(s.lastToken), `the parallel requests carried ${tokens.size} distinct token(s), want 1 new one`);
    return statuses.map((st) => st.slice(0, 3)).join(' ');
  });

  await step('sign out at the provider (not via gatehouse): it POSTs a logout token to /auth/backchannel-logout', async () => {
    const delivered = eventCount(s, 'EVENT backchannel.success bff sid=yes');
    const ended = () => s.gatehouse.text.split('\n').filter((l) => /INFO (request\{request_id=\w+\}: )?back-channel logout sessions=1 by_sid=true/.test(l)).length;
    const endedBefore = ended();
    await s.page.goto(`${s.op}/session/end`);
    await s.page.getByRole('button', { name: 'Yes, sign me out' }).click();
    await s.page.getByText('Sign-out Success').waitFor();
    await waitFor(() => eventCount(s, 'EVENT backchannel.success bff sid=yes') > delivered,
      { timeoutMs: 5000, what: 'the provider to deliver the logout token to gatehouse (EVENT backchannel.success)' });
    expect(!s.provider.text.includes('EVENT backchannel.error'), `the back-channel delivery failed: ${s.provider.lines.filter((l) => l.includes('backchannel.error')).join(' | ')}`);
    // Log lines leave in batches (every 100 ms at most): wait for the line, then count it.
    await waitFor(() => ended() > endedBefore,
      { timeoutMs: 2000, what: 'gatehouse to log "back-channel logout sessions=1 by_sid=true"' }).catch(() => {});
    expect(ended() === endedBefore + 1, 'gatehouse did not log "back-channel logout sessions=1 by_sid=true"');
  });

  await step('after back-channel logout: the page\'s fetch(\'/api/hello\') is 401, the SPA is signed out, the cookie replayed is 401', async () => {
    await s.page.goto(`${s.gh}/`);
    const fromPage = await s.page.evaluate(() => fetch('/api/hello', { headers: { 'X-CSRF': '1' } }).then((r) => r.status));
    expect(fromPage === 401, `fetch('/api/hello') from the page answered ${fromPage}, want 401`);
    await expectSpaState(s.page, 'signed-out');
    for (const path of ['/api/hello', '/auth/user']) {
      const res = await http(`${s.gh}${path}`, { cookie: `${COOKIE}=${s.cookieValue}` });
      expect(res.status === 401, `the cookie of the ended session replayed on ${path} got ${res.status}, want 401`);
    }
  });

  await logIn(s, 'log in again: the provider asks for credentials (its session is gone)');

  await step('consent again, back on the SPA, and "Call API" answers 200', async () => {
    await consentAndReturn(s);
    const cookie = (await browser.cookies(s.gh)).find((c) => c.name === COOKIE);
    expect(cookie && cookie.value !== s.cookieValue, 'the second login did not set a new session cookie');
    s.cookieValues = [s.cookieValue, cookie.value];
    s.cookieValue = cookie.value;
    return callApi(s);
  });

  await step('the SPA opens a WebSocket through gatehouse and exchanges messages; the API saw a valid token on its handshake', async () => {
    const before = (await observed(s)).ws;
    await s.page.evaluate(() => window.openLive());
    const echoes = [];
    for (const text of ['one', 'two', 'three']) echoes.push(await s.page.evaluate((t) => window.sendLive(t), text));
    expect(echoes.join(' ') === 'one two three', `the socket echoed ${JSON.stringify(echoes)}`);
    const seen = (await observed(s)).ws;
    expect(seen.accepted === before.accepted + 1 && seen.refused === before.refused, `the API accepted ${seen.accepted - before.accepted} and refused ${seen.refused - before.refused} WebSocket handshake(s), want 1 and 0`);
    expect(seen.messages - before.messages === 3, `the API got ${seen.messages - before.messages} message(s), want 3`);
    return 'three messages echoed';
  });

  await step('in another tab, click "Log out": gatehouse sends that tab to the provider, which asks to confirm', async () => {
    s.tab = await browser.newPage();
    s.tab.setDefaultTimeout(WAIT_MS);
    await s.tab.goto(`${s.gh}/`);
    await expectSpaState(s.tab, 'signed-in');
    await s.tab.click('#logout');
    await s.tab.waitForURL((url) => url.origin === s.op);
    await s.tab.getByRole('button', { name: 'Yes, sign me out' }).click();
    await s.tab.waitForURL((url) => url.origin === s.gh && url.pathname === '/', { timeout: 15_000 });
    await expectSpaState(s.tab, 'signed-out');
    const left = (await browser.cookies(s.gh)).find((c) => c.name === COOKIE);
    expect(!left, `the ${COOKIE} cookie is still in the browser after logout`);
  });

  await step('the first tab\'s WebSocket was closed by gatehouse with 4401 (session ended), and the API got the close too', async () => {
    await s.page.waitForSelector('#live[data-state="closed"]', { timeout: 3000 });
    const code = await s.page.evaluate(() => window.live.closeCode);
    expect(code === 4401, `the page's WebSocket closed with ${code}, want 4401`);
    await waitFor(async () => (await observed(s)).ws.closes.includes(4401), { timeoutMs: 3000, what: 'the API to see close code 4401' });
    return `closes seen by the API: ${(await observed(s)).ws.closes.join(', ')}`;
  });

  await step('after logout: the API is 401 from the page, and the old cookie replayed is 401', async () => {
    const fromPage = await s.page.evaluate(() => fetch('/api/hello', { headers: { 'X-CSRF': '1' } }).then((r) => r.status));
    expect(fromPage === 401, `fetch('/api/hello') from the page answered ${fromPage}, want 401`);
    for (const path of ['/api/hello', '/auth/user']) {
      const res = await http(`${s.gh}${path}`, { cookie: `${COOKIE}=${s.cookieValue}` });
      expect(res.status === 401, `the old cookie replayed on ${path} got ${res.status}, want 401`);
    }
  });

  await step('the API never saw the cookie; gatehouse logged no token, code, cookie or secret', async () => {
    const seen = await observed(s);
    expect(!seen.sawGatehouseCookie, `the API received gatehouse's ${COOKIE} cookie`);
    expect(seen.active === 9, `the API saw ${seen.active} valid bearer token(s), want 9 (1 + 1 + 6 parallel + 1 after the second login)`);
    const issued = readIssued();
    const kinds = new Set(issued.map((i) => i.kind));
    for (const kind of ['code', 'access_token', 'refresh_token', 'id_token']) {
      expect(kinds.has(kind), `the provider issued no ${kind} (have: ${[...kinds].join(', ') || 'none'})`);
    }
    const logs = s.gatehouse.text;
    for (const { kind, value } of issued) expect(!logs.includes(value), `gatehouse logged a ${kind}`);
    for (const value of s.cookieValues) expect(!logs.includes(value), 'gatehouse logged a session cookie value');
    expect(!logs.includes(cfg.bffSecret), 'gatehouse logged the client secret');
    expect(!logs.includes(cfg.sessionKey), 'gatehouse logged the session key');
    return `${issued.length} issued values checked against ${logs.split('\n').length} log lines`;
  });

  return s;
}

function gatehouseConfig(s) {
  const q = JSON.stringify; // a JSON string is a valid TOML basic string for these values
  return `[server]
listen = ${q(new URL(s.gh).host)}
public_origin = ${q(s.gh)}

[oidc]
issuer = ${q(s.op)}
client_id = "bff"
client_secret = ${q(cfg.bffSecret)}
scopes = ["openid", "profile", "email", "offline_access"]

[session]
store = "redis"
redis_url = ${q(cfg.redisUrl)}
redis_prefix = ${q(cfg.redisPrefix)}
keys = [${q(cfg.sessionKey)}]

[[routes]]
path = "/api/"
upstream = ${q(s.api.url)}
auth = "required"

[[routes]]
path = "/"
upstream = ${q(s.spa.url)}
auth = "none"
`;
}

// ---- helpers -------------------------------------------------------------------------------

/** Click "Log in" on the signed-out SPA and sign in at the provider. */
async function logIn(s, title) {
  await step(title, async () => {
    await s.page.click('#login');
    await s.page.waitForURL((url) => url.origin === s.op);
    await s.page.fill('input[name=login]', cfg.login);
    await s.page.fill('input[name=password]', 'any password');
    await s.page.getByRole('button', { name: 'Sign-in' }).click();
    return `signed in as ${cfg.login}`;
  });
}

/** On the provider's consent page: continue, and check the SPA shows the user. */
async function consentAndReturn(s) {
  await s.page.getByRole('button', { name: 'Continue' }).click();
  await s.page.waitForURL((url) => url.origin === s.gh && url.pathname === '/', { timeout: 15_000 });
  await expectSpaState(s.page, 'signed-in');
  const sub = await s.page.textContent('#sub');
  const email = await s.page.textContent('#email');
  expect(sub === cfg.login, `the SPA shows sub ${JSON.stringify(sub)}, want ${JSON.stringify(cfg.login)}`);
  expect(email.includes(`${cfg.login}@example.test`), `the SPA shows email ${JSON.stringify(email)}`);
}

/** Click "Call API" and expect 200 for the user; returns the result text. */
async function callApi(s) {
  await s.page.evaluate(() => document.getElementById('api-result')?.removeAttribute('data-state'));
  await s.page.click('#call-api');
  await s.page.waitForSelector('#api-result[data-state]:not([data-state="pending"])');
  const text = await s.page.textContent('#api-result');
  expect(text.startsWith('200 '), `the API call shows: ${text}`);
  expect(JSON.parse(text.slice(4)).hello === cfg.login, `the API answered ${text}`);
  return text;
}

/** How many lines the provider printed that start with `prefix`. */
function eventCount(s, prefix) {
  return s.provider.text.split('\n').filter((line) => line.startsWith(prefix)).length;
}

const refreshCount = (s) => eventCount(s, 'EVENT refresh_token.grant');

async function step(title, fn) {
  stepNo += 1;
  currentStep = `${stepNo}. ${title}`;
  const t0 = Date.now();
  const detail = await fn();
  console.log(`[e2e] ok ${String(stepNo).padStart(2)}  ${title}${detail ? `: ${detail}` : ''} (${seconds(Date.now() - t0)})`);
}

async function start(name, command, args) {
  const service = await startService(name, command, args, { dir: tmp, readyPattern: /^READY (\S+)/ })
    .catch((err) => { if (err.service) services.push(err.service); throw err; });
  services.push(service);
  return service;
}

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

/** The SPA marks #status with data-state once /auth/user answered. */
async function expectSpaState(page, want) {
  await page.waitForFunction(() => document.getElementById('status')?.dataset.state !== 'loading', null, { timeout: WAIT_MS });
  const state = await page.getAttribute('#status', 'data-state');
  const text = await page.textContent('#status');
  expect(state === want, `the SPA is ${state} (${text}), want ${want}`);
}

/** A request from outside the browser, with the anti-forgery header and no redirects. */
async function http(url, { cookie } = {}) {
  const headers = { 'x-csrf': '1', accept: 'application/json' };
  if (cookie) headers.cookie = cookie;
  const res = await fetch(url, { headers, redirect: 'manual', signal: AbortSignal.timeout(5000) })
    .catch((err) => { throw new Error(`GET ${url}: ${err.cause?.code ?? err.message}`); });
  const text = await res.text();
  const type = res.headers.get('content-type') ?? '';
  let json = null;
  if (type.includes('json')) try { json = JSON.parse(text); } catch { /* reported by the caller */ }
  return { status: res.status, type, text, json, setCookie: res.headers.getSetCookie() };
}

async function observed(s) {
  const res = await fetch(`${s.api.url}/_e2e/observed`, { signal: AbortSignal.timeout(2000) });
  return res.json();
}

function readIssued() {
  let text = '';
  try { text = readFileSync(issuedFile, 'utf8'); } catch { /* nothing issued yet */ }
  return text.split('\n').filter(Boolean).map((line) => JSON.parse(line));
}

function expectNoIssuedValue(text, where) {
  for (const { kind, value } of readIssued()) expect(!text.includes(value), `${where} contains a ${kind}`);
}

function isLocal(url) {
  return !/^https?:$/.test(url.protocol) || ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname);
}

function withoutQuery(url) {
  const u = new URL(url);
  return `${u.origin}${u.pathname}${u.search ? '?…' : ''}`;
}

const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;

async function cleanup() {
  if (browser) await withTimeout(browser.close(), 5000, 'Chromium to close').catch((err) => console.error(`[e2e] ${err.message}`));
  await stopAll(services);
  rmSync(join(tmp, 'chromium-profile'), { recursive: true, force: true });
  await deleteKeys(cfg.redisUrl, cfg.redisPrefix).catch(() => {});
}

function report(err) {
  console.error(`\n[e2e] FAILED at step ${currentStep}\n[e2e] ${err.message}`);
  if (browserTrail.length) console.error(`\n--- browser (last 15) ---\n${browserTrail.slice(-15).join('\n')}`);
  const tails = { gatehouse: 60, provider: 30, api: 15, spa: 5 };
  for (const service of services) {
    const state = service.exitInfo ? ` (${service.describeExit()})` : '';
    console.error(`\n--- ${service.name}${state}, last lines; all in ${service.logFile} ---\n${service.tail(tails[service.name] ?? 20)}`);
  }
}

// ---- run -----------------------------------------------------------------------------------

let exiting = false;
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, async () => {
    if (exiting) return;
    exiting = true;
    console.error(`[e2e] ${signal}: stopping everything`);
    await cleanup();
    process.exit(1);
  });
}

const t0 = Date.now();
let watchdog;
try {
  await Promise.race([
    main(),
    new Promise((_, reject) => {
      watchdog = setTimeout(() => reject(new Error(`the run took longer than ${BUDGET_MS / 1000} s`)), BUDGET_MS);
    }),
  ]);
  clearTimeout(watchdog);
  exiting = true;
  await cleanup();
  console.log(`[e2e] all ${stepNo} steps passed in ${seconds(Date.now() - t0)}; logs and screenshot in ${tmp}`);
  process.exit(0);
} catch (err) {
  clearTimeout(watchdog);
  exiting = true;
  report(err);
  await cleanup();
  console.error(`\n[e2e] failed after ${seconds(Date.now() - t0)}; logs in ${tmp}`);
  process.exit(1);
}
