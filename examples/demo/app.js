// This page never sees a token: the browser holds only gatehouse's HttpOnly cookie.
// Every call to gatehouse carries the anti-forgery header it requires.
const $ = (id) => document.getElementById(id);
const csrf = { 'X-CSRF': '1' };

function show(state, text) {
  $('status').textContent = text;
  $('signed-out').hidden = state !== 'signed-out';
  $('signed-in').hidden = state !== 'signed-in';
}

async function load() {
  const res = await fetch('/auth/user', { headers: csrf });
  if (res.status === 401) return show('signed-out', 'Not signed in.');
  if (!res.ok) return show('error', `GET /auth/user answered ${res.status}`);
  const user = await res.json();
  const email = user.claims && user.claims.email ? ` (${user.claims.email})` : '';
  $('user').textContent = user.sub + email;
  // Follow only a same-origin path.
  if (typeof user.logout_url === 'string' && /^\/(?![\/\\])/.test(user.logout_url)) {
    $('logout').href = user.logout_url;
  }
  show('signed-in', 'Signed in.');
}

$('call-api').addEventListener('click', async () => {
  const out = $('api-result');
  out.textContent = '…';
  try {
    const res = await fetch('/api/hello', { headers: csrf });
    out.textContent = `${res.status} ${await res.text()}`;
  } catch (err) {
    out.textContent = String(err);
  }
});

load().catch((err) => show('error', String(err)));
