// Child processes for the e2e run: start, wait until ready, keep their output, stop them all.
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';

const TAIL_LINES = 200;

export class Service {
  /** @param {string} name @param {import('node:child_process').ChildProcess} child @param {string} logFile */
  constructor(name, child, logFile) {
    this.name = name;
    this.child = child;
    this.logFile = logFile;
    this.lines = [];
    this.text = '';
    // Settles when the process is gone, or could not be started at all.
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', (error) => resolve({ error }));
    });
    this.exitInfo = null;
    this.exited.then((info) => { this.exitInfo = info; });
  }

  /** Rejects once the process is gone: race it against anything that needs the process. */
  died() {
    return this.exited.then(() => { throw new Error(`${this.name} ${this.describeExit()}`); });
  }

  /** The last n lines the process wrote, stdout and stderr interleaved. */
  tail(n = 40) {
    return this.lines.slice(-n).join('\n');
  }

  describeExit() {
    const { code, signal, error } = this.exitInfo ?? {};
    if (error) return `could not start (${error.message})`;
    return signal ? `was killed by ${signal}` : `exited with code ${code}`;
  }
}

/**
 * Spawn `command args` and, when `readyPattern` is given, wait for a stdout/stderr line that
 * matches it (its first group is returned as `service.url`). Every line also goes to
 * `<dir>/<name>.log`.
 */
export async function startService(name, command, args, { dir, env, readyPattern, timeoutMs = 10_000 }) {
  const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const service = new Service(name, child, join(dir, `${name}.log`));
  const log = createWriteStream(service.logFile);
  let onLine = () => {};
  for (const stream of [child.stdout, child.stderr]) {
    let partial = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => {
      service.text += chunk;
      log.write(chunk);
      const parts = (partial + chunk).split('\n');
      partial = parts.pop();
      for (const line of parts) {
        service.lines.push(line);
        if (service.lines.length > TAIL_LINES) service.lines.shift();
        onLine(line);
      }
    });
  }
  service.exited.then(() => log.end());
  if (!readyPattern) return service;

  const ready = new Promise((resolve) => {
    onLine = (line) => {
      const match = readyPattern.exec(line);
      if (match) { service.url = match[1]; onLine = () => {}; resolve(service); }
    };
  });
  return withTimeout(Promise.race([ready, service.died()]), timeoutMs, `${name} to start`)
    .catch((err) => { err.service = service; throw err; });
}

/** SIGTERM every live service, then SIGKILL what is still there after `graceMs`. */
export async function stopAll(services, graceMs = 3000) {
  const live = services.filter((s) => s.exitInfo === null);
  for (const s of live) s.child.kill('SIGTERM');
  await Promise.race([Promise.all(live.map((s) => s.exited)), sleep(graceMs)]);
  for (const s of live) if (s.exitInfo === null) s.child.kill('SIGKILL');
  await Promise.race([Promise.all(live.map((s) => s.exited)), sleep(1000)]);
}

/** A port that was free a moment ago on 127.0.0.1 (for a server that must be told its port). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Poll `check` until it returns a truthy value; its last error explains a timeout. */
export async function waitFor(check, { timeoutMs, intervalMs = 100, what }) {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer yet';
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (err) {
      last = err.message;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last})`);
    await sleep(intervalMs);
  }
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
