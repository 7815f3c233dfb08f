// Just enough RESP to check that Redis answers and to delete this run's keys afterwards.
import net from 'node:net';

/** Run `commands` (arrays of strings) on one connection to `redisUrl`; resolves with the replies. */
export function redis(redisUrl, commands, timeoutMs = 3000) {
  const url = new URL(redisUrl);
  const pre = [];
  if (url.password) pre.push(url.username ? ['AUTH', decodeURIComponent(url.username), decodeURIComponent(url.password)] : ['AUTH', decodeURIComponent(url.password)]);
  const db = url.pathname.replace(/^\//, '');
  if (db) pre.push(['SELECT', db]);
  const all = [...pre, ...commands];

  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: url.hostname || '127.0.0.1', port: Number(url.port || 6379) });
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`redis at ${url.host} did not answer within ${timeoutMs} ms`)));
    let buffer = Buffer.alloc(0);
    const replies = [];
    socket.on('error', (err) => reject(new Error(`redis at ${url.host}: ${err.message}`)));
    socket.on('data', (chunk) => {
      buffer = Buffer.concat([buffer, chunk]);
      for (;;) {
        const parsed = parse(buffer, 0);
        if (!parsed) break;
        buffer = buffer.subarray(parsed.end);
        if (parsed.value instanceof Error) { socket.destroy(); reject(parsed.value); return; }
        replies.push(parsed.value);
        if (replies.length === all.length) { socket.end(); resolve(replies.slice(pre.length)); return; }
      }
    });
    socket.write(all.map(encode).join(''));
  });
}

/** Delete every key under `prefix`; returns how many there were. */
export async function deleteKeys(redisUrl, prefix) {
  let cursor = '0';
  let deleted = 0;
  do {
    const [[next, keys]] = await redis(redisUrl, [['SCAN', cursor, 'MATCH', `${prefix}*`, 'COUNT', '1000']]);
    if (keys.length) deleted += (await redis(redisUrl, [['DEL', ...keys]]))[0];
    cursor = next;
  } while (cursor !== '0');
  return deleted;
}

function encode(args) {
  return `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;
}

// Returns { value, end } or null when `buf` does not hold a whole reply yet.
function parse(buf, start) {
  const eol = buf.indexOf('\r\n', start);
  if (eol < 0) return null;
  const type = String.fromCharCode(buf[start]);
  const line = buf.toString('utf8', start + 1, eol);
  const next = eol + 2;
  switch (type) {
    case '+': return { value: line, end: next };
    case '-': return { value: new Error(`redis: ${line}`), end: next };
    case ':': return { value: Number(line), end: next };
    case '$': {
      const len = Number(line);
      if (len < 0) return { value: null, end: next };
      if (buf.length < next + len + 2) return null;
      return { value: buf.toString('utf8', next, next + len), end: next + len + 2 };
    }
    case '*': {
      const count = Number(line);
      const items = [];
      let end = next;
      for (let i = 0; i < count; i += 1) {
        const item = parse(buf, end);
        if (!item) return null;
        items.push(item.value);
        end = item.end;
      }
      return { value: count < 0 ? null : items, end };
    }
    default: return { value: new Error(`redis: unexpected reply type ${JSON.stringify(type)}`), end: buf.length };
  }
}
