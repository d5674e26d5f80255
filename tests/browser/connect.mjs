// The connect flow in a real browser: open a connect link, press Accept on the (sandbox) consent page, land on the
// connector's "Connected" page or the app's return URL; and press Cancel to see "Access not granted".
// Run by `make test` inside `scripts/stack.py run`, which exports the STACK_* variables.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';

const base = process.env.STACK_FUNCTIONS_URL;
const key = process.env.STACK_MANAGEMENT_API_KEY;
if (!base || !key) {
  console.error('STACK_FUNCTIONS_URL / STACK_MANAGEMENT_API_KEY are not set: run this through `make test`');
  process.exit(2);
}

async function api(method, path, body) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: body && JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

const tenant = () => `browser-${Math.random().toString(16).slice(2, 10)}`;

const tests = {
  async 'Accept connects the org and shows "Connected"'(page) {
    const t = tenant();
    const session = await api('POST', '/connect-sessions', { tenant_id: t });
    assert(session.status === 201, `session: ${session.status}`);
    await page.goto(session.body.connect_url);
    await page.getByRole('button', { name: 'Accept' }).click();
    await page.getByRole('heading', { name: 'Connected' }).waitFor();
    const text = await page.textContent('main');
    const id = /Connection id: (con_[0-9a-f]+)/.exec(text)?.[1];
    assert(id, `no connection id on the page: ${text}`);
    const connection = await api('GET', `/connections/${id}`);
    assert(connection.body.status === 'active', `status ${connection.body.status}`);
    assert(connection.body.sites.length === 2, `sites ${JSON.stringify(connection.body.sites)}`);
    mkdirSync('.dev', { recursive: true });
    await page.screenshot({ path: '.dev/connected.png' });
  },

  async 'Accept with a return URL lands back in the app'(page) {
    const t = tenant();
    const returnUrl = `${base}/__return/browser`;
    const session = await api('POST', '/connect-sessions', { tenant_id: t, return_url: returnUrl });
    await page.goto(session.body.connect_url);
    await page.getByRole('button', { name: 'Accept' }).click();
    await page.waitForURL((url) => url.href.startsWith(returnUrl));
    const landed = new URL(page.url());
    assert(landed.searchParams.get('status') === 'active', `landed on ${landed}`);
    const id = landed.searchParams.get('connection_id');
    const listed = await api('GET', `/connections?tenant_id=${t}`);
    assert(listed.body.items.length === 1 && listed.body.items[0].connection_id === id, JSON.stringify(listed.body));
  },

  async 'A flow carried to another browser is refused and stores nothing'(page) {
    const t = tenant();
    const session = await api('POST', '/connect-sessions', { tenant_id: t });
    // This browser opens the connect link and stops at Atlassian's consent screen...
    await page.goto(session.body.connect_url);
    await page.getByRole('button', { name: 'Accept' }).waitFor();
    const authorizeUrl = page.url();
    // ...and another browser (no cookies of the first) is handed the consent screen and accepts.
    const other = await page.context().browser().newContext();
    try {
      const elsewhere = await other.newPage();
      elsewhere.setDefaultTimeout(30000);
      await elsewhere.goto(authorizeUrl);
      await elsewhere.getByRole('button', { name: 'Accept' }).click();
      await elsewhere.getByRole('heading', { name: 'The connection failed' }).waitFor();
      const text = await elsewhere.textContent('main');
      assert(text.includes('started in another browser'), `the page says: ${text}`);
    } finally {
      await other.close();
    }
    const listed = await api('GET', `/connections?tenant_id=${t}`);
    assert(listed.body.items.length === 0, JSON.stringify(listed.body));
  },

  async 'Cancel says access was not granted and stores nothing'(page) {
    const t = tenant();
    const session = await api('POST', '/connect-sessions', { tenant_id: t });
    await page.goto(session.body.connect_url);
    await page.getByRole('button', { name: 'Cancel' }).click();
    await page.getByRole('heading', { name: 'Access not granted' }).waitFor();
    const listed = await api('GET', `/connections?tenant_id=${t}`);
    assert(listed.body.items.length === 0, JSON.stringify(listed.body));
    await page.screenshot({ path: '.dev/cancelled.png' });
  },
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
let passed = 0;
let failed = 0;
for (const [name, test] of Object.entries(tests)) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(30000);
  try {
    await test(page);
    passed += 1;
    console.log(`ok - ${name}`);
  } catch (error) {
    failed += 1;
    console.log(`FAILED - ${name}: ${error.message}`);
  } finally {
    await context.close();
  }
}
await browser.close();
console.log(`browser: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
