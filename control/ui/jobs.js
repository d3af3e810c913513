// The jobs table and a job's page, both drawn from the live job store (kept
// current by the WatchJobs stream), and the job actions.

import {call} from './api.js';
import {renderLetters} from './letters.js';
import {renderRuns} from './runs.js';
import {
  STATE_NAMES, bytes, count, dateTime, durationSeconds, durationText, h, num, relative, replace, stateBadge,
  stateName,
} from './dom.js';

/** Ids of the jobs ticked in the table (kept across redraws and filters). */
const selected = new Set();

const BULK = [
  {label: 'Pause', method: 'PauseJobs', done: 'paused'},
  {label: 'Resume', method: 'ResumeJobs', done: 'resumed'},
  {label: 'Run now', method: 'RunJobsNow', done: 'asked to run'},
  {label: 'Delete', method: 'DeleteJobs', done: 'deleted', confirm: true},
];

/** The jobs table with its filters; returns a function that redraws it. */
export function renderJobs(main, store, filter, setFilter) {
  const labelsInput = h('input', {id: 'filter-labels', type: 'search', value: filter.labels, size: 28,
    placeholder: 'team=news,env!=test', 'aria-describedby': 'filter-labels-error',
    onchange: () => setFilter({...filter, labels: labelsInput.value.trim()})});
  const labelsError = h('div', {class: 'field-error', id: 'filter-labels-error', role: 'alert', hidden: true});
  const allBox = h('input', {type: 'checkbox', 'aria-label': 'Select all shown jobs', class: 'admin-only'});
  const outcome = h('div', {class: 'bulk-outcome', role: 'status', id: 'bulk-outcome'});
  const bulkButtons = BULK.map((action) => h('button', {type: 'button', class: action.confirm ? 'danger' : null,
    onclick: () => bulk(action)}, action.label));
  const bulkBar = h('div', {class: 'actions bulk admin-only', role: 'group', 'aria-label': 'Selected jobs'},
    h('span', {class: 'muted', id: 'selected-count'}), bulkButtons, outcome);
  let shownIds = [];
  const typeSelect = h('select', {id: 'filter-type', onchange: () => setFilter({...filter, type: typeSelect.value})});
  const stateSelect = h('select', {id: 'filter-state', onchange: () => setFilter({...filter, state: stateSelect.value})},
    h('option', {value: ''}, 'all'), STATE_NAMES.map((s) => h('option', {value: s, selected: s === filter.state}, s)));
  const shown = h('span', {class: 'muted', id: 'jobs-count'});
  const body = h('tbody');
  const table = h('table', {class: 'jobs', 'aria-label': 'Jobs'},
    h('thead', {}, h('tr', {},
      h('th', {class: 'pick admin-only'}, allBox),
      h('th', {}, 'Name'), h('th', {}, 'Type'), h('th', {}, 'Labels'), h('th', {}, 'State'), h('th', {}, 'Owner'),
      h('th', {class: 'num'}, 'Items'), h('th', {class: 'num'}, 'Errors'), h('th', {}, 'Last success'),
      h('th', {}, 'Next run'))),
    body);
  const empty = h('p', {class: 'empty', hidden: true});
  replace(main,
    h('div', {class: 'toolbar'},
      h('h1', {}, 'Jobs'),
      h('label', {}, 'Type ', typeSelect), h('label', {}, 'State ', stateSelect),
      h('label', {}, 'Labels ', labelsInput), shown),
    labelsError, bulkBar, table, empty);

  async function bulk(action) {
    const ids = [...selected];
    if (!ids.length) return;
    if (action.confirm && !window.confirm(`${action.label} ${ids.length} job(s)? What they ingested stays in the index.`)) {
      return;
    }
    for (const button of bulkButtons) button.disabled = true;
    replace(outcome, `${action.label}…`);
    try {
      const {results = []} = await call(action.method, {ids});
      const failed = results.filter((r) => r.code);
      for (const r of results) if (!r.code && action.method === 'DeleteJobs') selected.delete(r.id);
      replace(outcome, `${results.length - failed.length} of ${results.length} ${action.done}.`,
        failed.length ? h('span', {class: 'error'}, ` Failed: ${failed.map((r) => `${r.id}: ${r.message}`).join('; ')}`)
          : '');
    } catch (e) {
      replace(outcome, h('span', {class: 'error'}, `${action.label} failed: ${e.message}`));
    } finally {
      draw();
    }
  }

  allBox.addEventListener('change', () => {
    for (const id of shownIds) {
      if (allBox.checked) selected.add(id);
      else selected.delete(id);
    }
    draw();
  });

  const draw = () => {
    const types = [...new Set([...store.types.map((t) => t.name), ...[...store.jobs.values()].map((j) => j.type)])];
    replace(typeSelect, h('option', {value: ''}, 'all'),
      types.sort().map((t) => h('option', {value: t, selected: t === filter.type}, t)));
    const jobs = [...store.jobs.values()]
      .filter((j) => !filter.type || j.type === filter.type)
      .filter((j) => !filter.state || stateName(j.status?.state) === filter.state)
      .sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
    shownIds = jobs.map((j) => j.id);
    // A deleted job leaves the selection.
    for (const id of selected) if (!store.jobs.has(id) && store.synced && !filter.labels) selected.delete(id);
    const pick = (id, checked) => {
      if (checked) selected.add(id);
      else selected.delete(id);
      draw();
    };
    replace(body, jobs.map((job) => jobRow(job, selected.has(job.id), pick)));
    const scope = filter.labels ? 'matching jobs' : 'jobs';
    replace(shown, store.synced ? `${jobs.length} of ${store.jobs.size} ${scope}` : 'loading…');
    labelsError.hidden = !store.selectorError;
    replace(labelsError, store.selectorError ? `Label filter: ${store.selectorError}` : '');
    if (store.selectorError) labelsInput.setAttribute('aria-invalid', 'true');
    else labelsInput.removeAttribute('aria-invalid');
    allBox.checked = shownIds.length > 0 && shownIds.every((id) => selected.has(id));
    replace(bulkBar.querySelector('#selected-count'), `${selected.size} selected`);
    for (const button of bulkButtons) button.disabled = selected.size === 0;
    empty.hidden = !store.synced || jobs.length > 0 || Boolean(store.selectorError);
    if (store.jobs.size === 0 && !filter.labels) replace(empty, 'No jobs yet. ', h('a', {href: '#/new'}, 'Add one'), '.');
    else replace(empty, 'No job matches these filters.');
  };
  return draw;
}

/** A job's labels as small `key=value` chips. */
function labelChips(job) {
  return Object.entries(job.labels || {}).sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => h('span', {class: 'label-chip'}, v ? `${k}=${v}` : k));
}

function jobRow(job, ticked, pick) {
  const status = job.status || {};
  const counters = status.counters || {};
  const failing = stateName(status.state) === 'failing';
  return h('tr', {'data-job': job.id, class: failing ? 'failing' : null},
    h('td', {class: 'pick admin-only'}, h('input', {type: 'checkbox', checked: ticked,
      'aria-label': `Select ${job.name}`, onchange: (e) => pick(job.id, e.target.checked)})),
    h('td', {}, h('a', {href: `#/jobs/${encodeURIComponent(job.id)}`}, job.name)),
    h('td', {}, job.type),
    h('td', {class: 'labels'}, labelChips(job)),
    h('td', {}, stateBadge(job)),
    h('td', {class: 'owner'}, status.owner || '—'),
    h('td', {class: 'num items'}, count(counters.itemsWritten)),
    // Errors: failed runs (a job that cannot even be built included) and
    // items the index refused.
    h('td', {class: 'num errors', title: status.lastError?.message || ''},
      count(num(counters.runsFailed) + num(counters.itemsFailed)),
      failing ? ` ⚠ ${count(status.consecutiveFailures)} in a row` : ''),
    h('td', {title: dateTime(status.lastSuccessTime)}, relative(status.lastSuccessTime)),
    h('td', {title: dateTime(status.nextRunTime)}, job.paused ? '—' : relative(status.nextRunTime)));
}

/** A job's page; returns a function that redraws it. */
export function renderJob(main, store, id, navigate) {
  const alert = h('div', {class: 'form-error', role: 'alert', hidden: true});
  const content = h('div');
  // Kept across redraws (it loads on its own); placed after the details.
  const runsSection = h('section', {id: 'runs'});
  const updateRuns = renderRuns(runsSection, id);
  const lettersSection = h('section', {id: 'letters'});
  const updateLetters = renderLetters(lettersSection, id);
  replace(main, alert, content);

  const act = async (label, method, request, after) => {
    alert.hidden = true;
    try {
      await call(method, request);
      if (after) after();
    } catch (e) {
      alert.hidden = false;
      replace(alert, `${label} failed: ${e.message}`);
    }
  };

  return () => {
    const job = store.jobs.get(id);
    if (!job) {
      replace(content, store.synced
        ? h('p', {class: 'empty'}, `No job "${id}" (it may have been deleted). `, h('a', {href: '#/'}, 'All jobs'))
        : h('p', {class: 'muted'}, 'Loading…'));
      return;
    }
    const status = job.status || {};
    const counters = status.counters || {};
    const actions = h('div', {class: 'actions admin-only'},
      job.paused
        ? h('button', {type: 'button', onclick: () => act('Resume', 'ResumeJob', {id})}, 'Resume')
        : h('button', {type: 'button', onclick: () => act('Pause', 'PauseJob', {id})}, 'Pause'),
      h('button', {type: 'button', disabled: job.paused, onclick: () => act('Run now', 'RunJobNow', {id})}, 'Run now'),
      h('a', {class: 'button', href: `#/jobs/${encodeURIComponent(id)}/edit`}, 'Edit'),
      h('button', {type: 'button', onclick: () => {
        if (window.confirm(`Start "${job.name}" over from an empty cursor? The source is read again; what is already indexed keeps its ids.`)) {
          act('Reset cursor', 'ResetJobCursor', {id});
        }
      }}, 'Reset cursor'),
      h('button', {type: 'button', class: 'danger', onclick: () => {
        if (window.confirm(`Delete the job "${job.name}"? What it ingested stays in the index.`)) {
          act('Delete', 'DeleteJob', {id, revision: job.revision}, () => navigate('#/'));
        }
      }}, 'Delete'));
    const secrets = job.secretParamsSet || [];
    const params = Object.entries(job.params || {});
    const history = store.history.get(id) || [];
    replace(content,
      h('div', {class: 'title'}, h('h1', {}, job.name), stateBadge(job)),
      h('p', {class: 'muted'}, status.stateReason || ''),
      actions,
      h('section', {class: 'cards'},
        card('Items written', count(counters.itemsWritten), 'items-written'),
        card('Items fetched', count(counters.itemsFetched), 'items-fetched'),
        card('Items failed', count(counters.itemsFailed), 'items-failed'),
        card('Failed runs', count(counters.runsFailed), 'runs-failed'),
        card('Failures in a row', count(status.consecutiveFailures), 'consecutive-failures'),
        card('Filtered out', count(counters.itemsFiltered), 'items-filtered'),
        card('Fetched', bytes(counters.bytesFetched), 'bytes-fetched'),
        card('Runs', count(counters.runs), 'runs'),
        card('Recent rate', rate(history), 'rate')),
      h('section', {}, h('h2', {}, 'Last error'), status.lastError
        ? h('div', {class: 'last-error'}, h('time', {}, dateTime(status.lastError.time)),
          h('pre', {id: 'last-error'}, status.lastError.message))
        : h('p', {class: 'muted', id: 'last-error'}, 'None.')),
      h('section', {}, h('h2', {}, 'Details'), h('dl', {class: 'details'},
        detail('Id', job.id), detail('Type', job.type), detail('Owner', status.owner || '—'),
        [h('dt', {}, 'Labels'), h('dd', {class: 'labels'}, Object.keys(job.labels || {}).length ? labelChips(job) : '—')],
        detail('Interval', durationText(durationSeconds(job.interval))),
        detail('Schedule', scheduleText(job.schedule)),
        detail('Next run', job.paused ? 'paused' : `${relative(status.nextRunTime)} (${dateTime(status.nextRunTime)})`),
        detail('Last success', `${relative(status.lastSuccessTime)} (${dateTime(status.lastSuccessTime)})`),
        detail('Created', dateTime(job.createTime)), detail('Updated', dateTime(job.updateTime)),
        detail('Revision', job.revision))),
      h('section', {}, h('h2', {}, 'Parameters'), h('dl', {class: 'details'},
        params.map(([name, value]) => detail(name, typeof value === 'string' ? value : JSON.stringify(value))),
        secrets.map((name) => detail(name, 'set (write-only)')),
        params.length + secrets.length === 0 ? h('dd', {class: 'muted'}, 'Defaults only.') : null)),
      runsSection,
      lettersSection,
      h('section', {}, h('h2', {}, 'Checkpoint'), status.checkpoint
        ? [h('p', {class: 'muted'}, `${bytes(status.checkpoint.cursorBytes)} cursor`),
          h('pre', {class: 'checkpoint'}, status.checkpoint.cursorPreview)]
        : h('p', {class: 'muted'}, 'None yet: written after the first successful run.')),
      h('section', {}, h('h2', {}, 'Recent counters'), history.length
        ? h('table', {class: 'recent'},
          h('thead', {}, h('tr', {}, h('th', {}, 'Time'), h('th', {class: 'num'}, 'Written'),
            h('th', {class: 'num'}, 'Fetched'), h('th', {class: 'num'}, 'Failed'), h('th', {class: 'num'}, 'Runs'))),
          h('tbody', {}, history.slice(-10).reverse().map((s) => h('tr', {},
            h('td', {}, new Date(s.time).toLocaleTimeString('en-GB', {hour12: false})),
            h('td', {class: 'num'}, count(s.written)), h('td', {class: 'num'}, count(s.fetched)),
            h('td', {class: 'num'}, count(s.failed)), h('td', {class: 'num'}, count(s.runs))))))
        : h('p', {class: 'muted'}, 'Counters seen while this page is open appear here.')));
    updateRuns(num(counters.runs));
    updateLetters(num(counters.itemsFailed));
  };
}

/** "0 7 * * MON-FRI (Europe/Paris), only 08:00-18:00", or "every interval". */
function scheduleText(schedule) {
  if (!schedule) return 'every interval, any time';
  const parts = [schedule.cron ? `cron ${schedule.cron}` : 'every interval'];
  if (schedule.windows?.length) parts.push(`only ${schedule.windows.map((w) => `${w.start}-${w.end}`).join(', ')}`);
  return `${parts.join(', ')} (${schedule.timeZone || 'UTC'})`;
}

function card(label, value, key) {
  return h('div', {class: 'card', 'data-counter': key}, h('div', {class: 'label'}, label), h('div', {class: 'value'}, value));
}

function detail(term, value) {
  return [h('dt', {}, term), h('dd', {}, String(value))];
}

/** Items written per minute over the samples seen. */
function rate(history) {
  if (history.length < 2) return '—';
  const first = history[0];
  const last = history[history.length - 1];
  const minutes = (last.time - first.time) / 60000;
  if (minutes <= 0) return '—';
  return `${Math.round((num(last.written) - num(first.written)) / minutes).toLocaleString('en-US')}/min`;
}
