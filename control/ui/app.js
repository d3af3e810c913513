// The web UI: a live store of jobs fed by the WatchJobs stream, hash routes
// for its views, and the token prompt when control requires one.

import {call, session, setToken, watchJobs, whenUnauthenticated} from './api.js';
import {h, num, replace} from './dom.js';
import {renderForm} from './form.js';
import {renderJob, renderJobs} from './jobs.js';
import {renderTransfer} from './transfer.js';
import {renderWorkers} from './workers.js';

/** Counter samples kept per job for its page. */
const HISTORY = 60;

// `selector`: the label selector the watch was opened with (the jobs
// table's label filter); `selectorError`: why the server refused it.
const store = {jobs: new Map(), history: new Map(), types: [], synced: false, role: 'admin', selector: '',
  selectorError: ''};
const main = document.getElementById('main');
const connection = document.getElementById('connection');
let redraw = () => {};
let pending = false;
let stopWatch = () => {};
let workersTimer = null;

function schedule() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => {
    pending = false;
    redraw();
  });
}

function sample(job) {
  const c = job.status?.counters || {};
  const samples = store.history.get(job.id) || [];
  const last = samples[samples.length - 1];
  const next = {time: Date.now(), written: num(c.itemsWritten), fetched: num(c.itemsFetched),
    failed: num(c.itemsFailed), runs: num(c.runs)};
  if (last && last.written === next.written && last.fetched === next.fetched && last.failed === next.failed
      && last.runs === next.runs) return;
  samples.push(next);
  if (samples.length > HISTORY) samples.shift();
  store.history.set(job.id, samples);
}

function apply(message, fresh) {
  if (fresh) {
    store.jobs.clear();
    store.synced = false;
  }
  for (const event of message.events || []) {
    if (event.type === 'JOB_EVENT_TYPE_DELETED') {
      store.jobs.delete(event.job.id);
      store.history.delete(event.job.id);
    } else if (event.job) {
      store.jobs.set(event.job.id, event.job);
      sample(event.job);
    }
  }
  if (message.synced || !message.snapshot) store.synced = true;
  schedule();
}

function showConnection(status, detail) {
  connection.className = `connection ${status}`;
  replace(connection, {live: 'live', connecting: 'connecting…', error: 'reconnecting…'}[status] || status);
  connection.title = detail || '';
}

function startWatch() {
  stopWatch();
  store.selectorError = '';
  const request = store.selector ? {labelSelector: store.selector} : {};
  stopWatch = watchJobs(request, apply, (status, detail) => {
    if (status === 'invalid') {
      store.selectorError = detail.message;
      store.jobs.clear();
      store.synced = true;
      showConnection('error', detail.message);
      schedule();
      return;
    }
    showConnection(status, detail);
  });
  call('ListJobTypes').then((answer) => {
    store.types = answer.jobTypes || [];
    schedule();
  }).catch(() => {});
  // A read token gets the UI without what it may not do.
  session().then(({role}) => {
    const changed = role !== store.role;
    store.role = role;
    document.body.classList.toggle('read-only', role !== 'admin');
    if (changed) route();
  }).catch(() => {});
}

/** The page of a view a read token may not use. */
function readOnly(what) {
  replace(main, h('p', {class: 'error', role: 'alert'},
    `This token has the role ${store.role}: ${what} needs a token with the role admin. `,
    h('a', {href: '#/'}, 'All jobs')));
}

function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function parseHash() {
  const [path, query = ''] = location.hash.replace(/^#/, '').split('?');
  return {parts: path.split('/').filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(query)};
}

function route() {
  clearInterval(workersTimer);
  redraw = () => {};
  const {parts, query} = parseHash();
  for (const link of document.querySelectorAll('nav a')) {
    link.classList.toggle('current', link.dataset.view === (parts[0] || 'jobs'));
  }
  // The jobs table's label filter is applied by the server, through the
  // watch; other views see every job.
  const selector = !parts[0] ? (query.get('labels') || '').trim() : '';
  if (selector !== store.selector) {
    store.selector = selector;
    startWatch();
  }
  const editing = parts[0] === 'new' || (parts[0] === 'jobs' && parts[1] && parts[2] === 'edit');
  if (editing && store.role !== 'admin') {
    document.title = 'Read only · ingest';
    readOnly(parts[0] === 'new' ? 'adding a job' : 'editing a job');
  } else if (parts[0] === 'new') {
    document.title = 'Add job · ingest';
    renderForm(main, {typeName: query.get('type'), done: (id) => navigate(`#/jobs/${encodeURIComponent(id)}`)});
  } else if (parts[0] === 'transfer') {
    document.title = 'Import and export · ingest';
    renderTransfer(main);
  } else if (parts[0] === 'workers') {
    document.title = 'Workers · ingest';
    const reload = renderWorkers(main);
    reload();
    workersTimer = setInterval(reload, 5000);
  } else if (parts[0] === 'jobs' && parts[1] && parts[2] === 'edit') {
    document.title = 'Edit job · ingest';
    replace(main, h('p', {class: 'muted'}, 'Loading…'));
    call('GetJob', {id: parts[1]})
      .then(({job}) => renderForm(main, {job, done: (id) => navigate(`#/jobs/${encodeURIComponent(id)}`)}))
      .catch((e) => replace(main, h('p', {class: 'error', role: 'alert'}, `Cannot load the job: ${e.message}`)));
  } else if (parts[0] === 'jobs' && parts[1]) {
    document.title = `${parts[1]} · ingest`;
    redraw = renderJob(main, store, parts[1], navigate);
    redraw();
  } else {
    document.title = 'Jobs · ingest';
    const filter = {type: query.get('type') || '', state: query.get('state') || '', labels: selector};
    redraw = renderJobs(main, store, filter, (next) => {
      const params = new URLSearchParams(Object.entries(next).filter(([, v]) => v));
      navigate(`#/${params.size ? `?${params}` : ''}`);
    });
    redraw();
  }
}

// The token prompt: shown when a call is refused for want of a token.
const dialog = document.getElementById('token-dialog');
const tokenForm = document.getElementById('token-form');
whenUnauthenticated((message) => {
  replace(document.getElementById('token-message'), message);
  if (!dialog.open) dialog.showModal();
});
tokenForm.addEventListener('submit', () => {
  setToken(document.getElementById('token-input').value.trim());
  document.getElementById('token-input').value = '';
  startWatch();
  route();
});

window.addEventListener('hashchange', route);
// Relative times ("3 s ago") move on without asking the server anything.
setInterval(schedule, 5000);
startWatch();
route();
