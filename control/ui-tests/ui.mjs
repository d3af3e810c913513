// The web UI end to end in headless Chromium (Debian's, driven by
// playwright-core): token prompt, live jobs table, workers, the generated
// add-job form with a client-side and a server-side field error, a job's
// counter rising, filters by state and by labels, a bulk pause and resume of
// the selected jobs, pause, resume, cursor reset, edit, delete; then, with a read token in
// another tab, the same jobs without anything that changes them. A
// screenshot of each step goes to the artifacts directory.
//
//   node ui.mjs <control-http-url> <artifacts-dir>
// Environment: INGEST_TOKEN (the token control requires), INGEST_READ_TOKEN
// (a token with the role read, for the last step), INGEST_CHROMIUM
// (default /usr/bin/chromium), INGEST_WORKERS (how many workers to expect).

import {mkdirSync} from 'node:fs';
import {join} from 'node:path';
import {chromium} from 'playwright-core';

const [url, artifacts] = process.argv.slice(2);
if (!url || !artifacts) {
  console.error('usage: node ui.mjs <control-http-url> <artifacts-dir>');
  process.exit(2);
}
const token = process.env.INGEST_TOKEN || '';
const readToken = process.env.INGEST_READ_TOKEN || '';
const workers = Number(process.env.INGEST_WORKERS || '1');
mkdirSync(artifacts, {recursive: true});

const browser = await chromium.launch({
  executablePath: process.env.INGEST_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // This machine's network is closed: no background connections.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
const page = await browser.newPage({viewport: {width: 1280, height: 900}});
page.setDefaultTimeout(20000);
const problems = [];
// The 401s before the token is given and the 400 of the provoked field error
// are expected; anything else logged as an error fails the test.
const expected = /^Failed to load resource: the server responded with a status of 40[01] /;
page.on('console', (m) => {
  if (m.type() === 'error' && !expected.test(m.text())) problems.push(`console: ${m.text()}`);
});
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
let shot = 0;
let step = '';
/** The tab the next screenshot is taken of. */
let shown = page;

async function check(name, action) {
  step = name;
  const started = Date.now();
  await action();
  shot += 1;
  const file = join(artifacts, `${String(shot).padStart(2, '0')}-${name.replace(/[^a-z0-9]+/gi, '-')}.png`);
  await shown.screenshot({path: file, fullPage: true});
  console.log(`ok ${shot} - ${name} (${Date.now() - started} ms)`);
}

/** Waits until `read()` returns something `accept` likes. */
async function until(what, read, accept, timeout = 20000) {
  const deadline = Date.now() + timeout;
  let last;
  while (Date.now() < deadline) {
    last = await read();
    if (accept(last)) return last;
    await page.waitForTimeout(200);
  }
  throw new Error(`${what}: still ${JSON.stringify(last)} after ${timeout} ms`);
}

const counter = async (key) => Number((await page.locator(`[data-counter=${key}] .value`).innerText()).replace(/,/g, ''));
const row = (id) => page.locator(`tr[data-job="${id}"]`);

try {
  await check('token prompt', async () => {
    await page.goto(url);
    if (token) {
      await page.getByRole('dialog').getByText('Token required').waitFor();
      await page.getByLabel('Token', {exact: true}).fill(token);
      await page.getByRole('button', {name: 'Use token'}).click();
    }
    await page.locator('#connection.live').waitFor();
  });

  await check('jobs table', async () => {
    await page.getByRole('table', {name: 'Jobs'}).waitFor();
    const rows = await until('background jobs listed', () => page.locator('tbody tr[data-job]').count(), (n) => n >= 1);
    // Owned jobs show their worker.
    await until('an owner shown', () => page.locator('td.owner').allInnerTexts(), (owners) => owners.some((o) => o !== '—'));
    console.log(`   ${rows} jobs listed`);
  });

  await check('workers view', async () => {
    await page.getByRole('link', {name: 'Workers'}).click();
    await until('workers listed', () => page.locator('tr[data-worker]').count(), (n) => n === workers);
    const owned = await page.locator('td.jobs-owned').allInnerTexts();
    if (owned.every((n) => n === '0')) throw new Error('no worker owns a job');
    // Each worker's load: memory, a heartbeat, its jobs by type (reloaded every 5 s).
    await until('every worker\'s memory shown', () => page.locator('td.memory').allInnerTexts(),
      (cells) => cells.length === workers && cells.every((c) => c.includes('B')), 30000);
    const heartbeats = await page.locator('td.heartbeat').allInnerTexts();
    if (heartbeats.some((t) => !/ago|now/.test(t))) throw new Error(`heartbeats: ${heartbeats}`);
    await until('jobs by type', () => page.locator('td.by-type').allInnerTexts(),
      (cells) => cells.some((c) => /demo \d/.test(c)), 30000);
  });

  await check('add job form', async () => {
    await page.getByRole('link', {name: 'Add job'}).click();
    await page.getByLabel('Type').selectOption('demo');
    await page.getByLabel('Job id').fill('ui-demo');
    await page.getByLabel('Name').fill('UI demo');
    await page.getByLabel('Interval').fill('1s');
    // Generated from the demo type's parameter spec.
    await page.getByRole('group', {name: 'demo parameters'}).waitFor();
    await page.getByLabel('items_per_run').fill('0');
  });

  await check('client-side field error', async () => {
    let creates = 0;
    const count = (r) => { if (r.url().endsWith('/CreateJob')) creates += 1; };
    page.on('request', count);
    await page.getByRole('button', {name: 'Create job'}).click();
    const error = page.locator('.field-error[data-field="job.params.items_per_run"]');
    await error.waitFor();
    const text = await error.innerText();
    if (!text.includes('at least 1')) throw new Error(`unexpected error text: ${text}`);
    page.off('request', count);
    if (creates !== 0) throw new Error('the form was sent despite the error');
  });

  await check('rules across parameters', async () => {
    // twitter: search mode needs a query, and a bearer token or the four OAuth secrets.
    await page.goto(`${url}#/new?type=twitter`);
    await page.getByLabel('Name').fill('no credentials');
    await page.getByRole('button', {name: 'Create job'}).click();
    const query = page.locator('.field-error[data-field="job.params.query"]');
    await query.waitFor();
    if (!(await query.innerText()).includes('required when mode is search')) throw new Error(await query.innerText());
    const bearer = await page.locator('.field-error[data-field="job.params.bearer_token"]').innerText();
    if (!bearer.includes('required: give bearer_token; or consumer_key')) throw new Error(bearer);
    await page.getByLabel('query').fill('from:rustlang');
    await page.getByLabel('consumer_key').fill('ck');
    await page.getByRole('button', {name: 'Create job'}).click();
    const missing = page.locator('.field-error[data-field="job.params.consumer_secret"]');
    await missing.waitFor();
    if (!(await missing.innerText()).includes('missing: consumer_secret, access_token, access_token_secret')) {
      throw new Error(await missing.innerText());
    }
  });

  await check('server-side field error', async () => {
    // The browser's copy of the spec loses its bounds, so the server's own
    // check is what answers, with a field violation shown by the field.
    await page.route('**/api/ingest.v1.JobService/ListJobTypes', async (route) => {
      const response = await route.fetch();
      const body = await response.json();
      for (const type of body.jobTypes) for (const p of type.params) { delete p.minimum; delete p.maximum; }
      await route.fulfill({response, json: body});
    });
    await page.goto(`${url}#/new?type=demo`);
    await page.getByLabel('Job id').fill('ui-demo');
    await page.getByLabel('Name').fill('UI demo');
    await page.getByLabel('items_per_run').fill('-5');
    await page.getByRole('button', {name: 'Create job'}).click();
    const error = page.locator('.field-error[data-field="job.params.items_per_run"]');
    await error.waitFor();
    const text = await error.innerText();
    if (!text.includes('must be at least 1, got -5')) throw new Error(`unexpected server error text: ${text}`);
    await page.unroute('**/api/ingest.v1.JobService/ListJobTypes');
  });

  await check('test run', async () => {
    // A dry run on a worker: the documents it would write, nothing written.
    await page.goto(`${url}#/new?type=demo`);
    await page.getByLabel('Name').fill('only a test');
    await page.getByLabel('items_per_run').fill('3');
    await page.getByRole('button', {name: 'Test'}).click();
    const summary = await until('the test result', () => page.locator('#test-summary').innerText().catch(() => ''),
      (t) => t.length > 0, 30000);
    if (!summary.startsWith('3 document(s) would be written') || !summary.includes('Nothing was written')) {
      throw new Error(summary);
    }
    const first = await page.locator('.test-document pre').first().innerText();
    if (!first.includes('"seq"')) throw new Error(`first document: ${first}`);
  });

  await check('label field error', async () => {
    await page.goto(`${url}#/new?type=demo`);
    await page.getByLabel('Name').fill('bad labels');
    await page.getByLabel('Labels').fill('team=ui\nbad key=x');
    await page.getByRole('button', {name: 'Create job'}).click();
    const error = page.locator('.field-error[data-field="job.labels"]');
    await error.waitFor();
    const text = await error.innerText();
    if (!text.includes('bad key: label key') || !text.includes('not allowed')) throw new Error(text);
  });

  await check('job created', async () => {
    await page.goto(`${url}#/new?type=demo`);
    await page.getByLabel('Job id').fill('ui-demo');
    await page.getByLabel('Name').fill('UI demo');
    await page.getByLabel('Interval').fill('1s');
    await page.getByLabel('Labels').fill('team=ui\nenv=test');
    await page.getByLabel('items_per_run').fill('5');
    await page.getByRole('button', {name: 'Create job'}).click();
    await page.getByRole('heading', {name: 'UI demo'}).waitFor();
  });

  await check('run history', async () => {
    // The job runs every second: its runs reach the history and the chart.
    const runs = page.getByRole('table', {name: 'Runs'});
    await until('two runs listed', () => runs.locator('tbody tr').count(), (n) => n >= 2, 30000);
    const first = await runs.locator('tbody tr').first().locator('td').allInnerTexts();
    if (first[2] !== 'succeeded' || first[4] !== '5' || !/^w\d$/.test(first[8])) throw new Error(`newest run: ${first}`);
    const bars = await page.locator('svg.runs-chart rect.bar').count();
    if (bars < 2) throw new Error(`${bars} bars in the runs chart`);
    // Files take every document: no dead letters.
    const letters = await until('the dead letters', () => page.locator('#letters-count').innerText().catch(() => ''),
      (t) => t.length > 0);
    if (!letters.startsWith('None')) throw new Error(letters);
  });

  await check('counter rising', async () => {
    const first = await until('items written', () => counter('items-written'), (n) => n > 0, 30000);
    await until('items written rising', () => counter('items-written'), (n) => n > first, 30000);
    await page.getByRole('link', {name: 'Jobs'}).click();
    const cell = row('ui-demo').locator('td.items');
    const before = Number((await cell.innerText()).replace(/,/g, ''));
    await until('the table counter rising', async () => Number((await cell.innerText()).replace(/,/g, '')),
      (n) => n > before, 30000);
  });

  await check('filtered by state', async () => {
    await page.locator('#filter-type').selectOption('demo');
    await page.locator('#filter-state').selectOption('running');
    await row('ui-demo').waitFor();
    await page.locator('#filter-state').selectOption('paused');
    await until('no paused job', () => row('ui-demo').count(), (n) => n === 0);
    await page.locator('#filter-state').selectOption('');
  });

  await check('filtered by labels', async () => {
    // The background jobs carry no labels: only ui-demo matches.
    await page.locator('#filter-labels').fill('team=ui,env in (test)');
    await page.locator('#filter-labels').press('Enter');
    await until('only ui-demo listed', () => page.locator('tbody tr[data-job]').count(), (n) => n === 1);
    await row('ui-demo').waitFor();
    const chips = await row('ui-demo').locator('.label-chip').allInnerTexts();
    if (chips.join(' ') !== 'env=test team=ui') throw new Error(`labels shown: ${chips}`);
  });

  await check('bad label filter', async () => {
    await page.locator('#filter-labels').fill('team in (ui');
    await page.locator('#filter-labels').press('Enter');
    const error = page.locator('#filter-labels-error');
    await error.waitFor();
    if (!(await error.innerText()).includes("without ')'")) throw new Error(await error.innerText());
    await page.locator('#filter-labels').fill('team=ui');
    await page.locator('#filter-labels').press('Enter');
    await row('ui-demo').waitFor();
  });

  await check('bulk pause and resume', async () => {
    await page.getByRole('checkbox', {name: 'Select all shown jobs'}).check();
    await page.getByText('1 selected').waitFor();
    const bar = page.getByRole('group', {name: 'Selected jobs'});
    await bar.getByRole('button', {name: 'Pause'}).click();
    await bar.getByText('1 of 1 paused.').waitFor();
    await row('ui-demo').locator('.state-paused').waitFor();
    await bar.getByRole('button', {name: 'Resume'}).click();
    await bar.getByText('1 of 1 resumed.').waitFor();
    await until('ui-demo running again', () => row('ui-demo').locator('.state-paused').count(), (n) => n === 0);
    await page.getByRole('checkbox', {name: 'Select all shown jobs'}).uncheck();
    await page.locator('#filter-labels').fill('');
    await page.locator('#filter-labels').press('Enter');
    await until('every job listed again', () => page.locator('tbody tr[data-job]').count(), (n) => n > 1);
  });

  await check('import preview and export', async () => {
    await page.getByRole('link', {name: 'Import / export'}).click();
    await page.getByLabel('Or paste').fill(`<opml version="2.0"><body><outline text="News">
      <outline type="rss" text="One" xmlUrl="https://one.example/feed"/>
      <outline type="rss" text="Two" xmlUrl="https://two.example/feed"/></outline></body></opml>`);
    await page.getByRole('button', {name: 'Preview'}).click();
    const summary = await until('the preview summary', () => page.locator('#import-summary').innerText().catch(() => ''),
      (t) => t.length > 0);
    if (summary !== '2 would be created') throw new Error(summary);
    const saved = page.waitForEvent('download');
    await page.getByRole('button', {name: 'Export JSON (all jobs)'}).click();
    const download = await saved;
    const exported = JSON.parse(await (await download.createReadStream()).toArray().then((c) => Buffer.concat(c).toString()));
    if (!exported.jobs.some((j) => j.id === 'ui-demo')) throw new Error('ui-demo missing from the export');
    if (exported.jobs.some((j) => j.status)) throw new Error('an export carries status');
  });

  await check('paused', async () => {
    await page.getByRole('link', {name: 'Jobs'}).click();
    await row('ui-demo').getByRole('link').click();
    await page.getByRole('button', {name: 'Pause'}).click();
    await page.locator('.title .state-paused').waitFor();
    // Counters of runs finished before the pause may still arrive; then
    // they stop: unchanged for 4 s (4 intervals of the job).
    let last = await counter('items-written');
    let since = Date.now();
    const deadline = Date.now() + 20000;
    while (Date.now() - since < 4000) {
      if (Date.now() > deadline) throw new Error(`a paused job kept writing: ${last} items and counting`);
      await page.waitForTimeout(250);
      const now = await counter('items-written');
      if (now !== last) [last, since] = [now, Date.now()];
    }
  });

  await check('resumed', async () => {
    await page.getByRole('button', {name: 'Resume'}).click();
    await page.getByRole('button', {name: 'Pause'}).waitFor();
    const resumed = await counter('items-written');
    await until('items written after resume', () => counter('items-written'), (n) => n > resumed, 30000);
  });

  await check('cursor reset', async () => {
    page.once('dialog', (d) => d.accept());
    const reset = page.waitForResponse((r) => r.url().endsWith('/ResetJobCursor'));
    await page.getByRole('button', {name: 'Reset cursor'}).click();
    const response = await reset;
    if (response.status() !== 200) throw new Error(`ResetJobCursor answered ${response.status()}`);
    // The job goes on from an empty cursor: items keep being written.
    const before = await counter('items-written');
    await until('items written after the reset', () => counter('items-written'), (n) => n > before, 30000);
  });

  await check('schedule preview', async () => {
    await page.getByRole('link', {name: 'Edit'}).click();
    await page.getByLabel('Cron').fill('every day');
    const next = page.locator('#next-runs');
    await until('the bad cron named', () => next.innerText(), (t) => t.includes('schedule.cron'));
    await page.getByLabel('Cron').fill('0 7 * * MON-FRI');
    await page.getByLabel('Time zone').fill('Europe/Paris');
    const text = await until('five next runs', () => next.innerText(), (t) => t.startsWith('Next runs:'));
    if (text.split('·').length !== 5) throw new Error(text);
  });

  await check('edited', async () => {
    // Still on the edit form: back to every interval, and a new name.
    await page.getByLabel('Cron').fill('');
    await page.getByLabel('Time zone').fill('');
    await page.getByLabel('Name').fill('UI demo renamed');
    await page.getByRole('button', {name: 'Save'}).click();
    await page.getByRole('heading', {name: 'UI demo renamed'}).waitFor();
  });

  await check('deleted', async () => {
    page.once('dialog', (d) => d.accept());
    await page.getByRole('button', {name: 'Delete'}).click();
    await page.getByRole('table', {name: 'Jobs'}).waitFor();
    await until('the row gone', () => row('ui-demo').count(), (n) => n === 0);
  });

  if (readToken) {
    await check('read-only token', async () => {
      const reader = await browser.newPage({viewport: {width: 1280, height: 900}});
      reader.setDefaultTimeout(20000);
      reader.on('pageerror', (e) => problems.push(`page error (read tab): ${e.message}`));
      shown = reader;
      await reader.goto(url);
      await reader.getByRole('dialog').getByText('Token required').waitFor();
      await reader.getByLabel('Token', {exact: true}).fill(readToken);
      await reader.getByRole('button', {name: 'Use token'}).click();
      await reader.locator('#connection.live').waitFor();
      await reader.locator('body.read-only').waitFor({state: 'attached'});
      await until('jobs listed to a read token', () => reader.locator('tbody tr[data-job]').count(), (n) => n >= 1);
      if (await reader.getByRole('link', {name: 'Add job'}).isVisible()) throw new Error('"Add job" offered to a read token');
      await reader.locator('tbody tr[data-job]').first().getByRole('link').first().click();
      await reader.locator('.title h1').waitFor();
      for (const name of ['Pause', 'Resume', 'Run now', 'Delete']) {
        if (await reader.getByRole('button', {name}).isVisible()) throw new Error(`"${name}" offered to a read token`);
      }
      await reader.evaluate(() => { location.hash = '#/new'; });
      await reader.getByText('This token has the role read: adding a job needs a token with the role admin').waitFor();
    });
  }

  if (problems.length) throw new Error(`the page reported errors:\n${problems.join('\n')}`);
  console.log(`all ${shot} steps passed; screenshots in ${artifacts}`);
} catch (e) {
  await page.screenshot({path: join(artifacts, 'failure.png'), fullPage: true}).catch(() => {});
  console.error(`not ok - ${step}: ${e.message}`);
  if (problems.length) console.error(problems.join('\n'));
  process.exitCode = 1;
} finally {
  await browser.close();
}
