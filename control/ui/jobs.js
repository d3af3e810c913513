// The jobs table and a job's page, both drawn from the live job store (kept
// current by the WatchJobs stream), and the job actions.

import {call} from './api.js';
import {
  STATE_NAMES, bytes, count, dateTime, durationSeconds, durationText, h, num, relative, replace, stateBadge,
  stateName,
} from './dom.js';

/** The jobs table with its filters; returns a function that redraws it. */
export function renderJobs(main, store, filter, setFilter) {
  const typeSelect = h('select', {id: 'filter-type', onchange: () => setFilter({...filter, type: typeSelect.value})});
  const stateSelect = h('select', {id: 'filter-state', onchange: () => setFilter({...filter, state: stateSelect.value})},
    h('option', {value: ''}, 'all'), STATE_NAMES.map((s) => h('option', {value: s, selected: s === filter.state}, s)));
  const shown = h('span', {class: 'muted', id: 'jobs-count'});
  const body = h('tbody');
  const table = h('table', {class: 'jobs', 'aria-label': 'Jobs'},
    h('thead', {}, h('tr', {},
      h('th', {}, 'Name'), h('th', {}, 'Type'), h('th', {}, 'State'), h('th', {}, 'Owner'),
      h('th', {class: 'num'}, 'Items'), h('th', {class: 'num'}, 'Errors'), h('th', {}, 'Last success'),
      h('th', {}, 'Next run'))),
    body);
  const empty = h('p', {class: 'empty', hidden: true});
  replace(main,
    h('div', {class: 'toolbar'},
      h('h1', {}, 'Jobs'),
      h('label', {}, 'Type ', typeSelect), h('label', {}, 'State ', stateSelect), shown),
    table, empty);

  return () => {
    const types = [...new Set([...store.types.map((t) => t.name), ...[...store.jobs.values()].map((j) => j.type)])];
    replace(typeSelect, h('option', {value: ''}, 'all'),
      types.sort().map((t) => h('option', {value: t, selected: t === filter.type}, t)));
    const jobs = [...store.jobs.values()]
      .filter((j) => !filter.type || j.type === filter.type)
      .filter((j) => !filter.state || stateName(j.status?.state) === filter.state)
      .sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
    replace(body, jobs.map(jobRow));
    replace(shown, store.synced ? `${jobs.length} of ${store.jobs.size} jobs` : 'loading…');
    empty.hidden = !store.synced || jobs.length > 0;
    if (store.jobs.size === 0) replace(empty, 'No jobs yet. ', h('a', {href: '#/new'}, 'Add one'), '.');
    else replace(empty, 'No job matches these filters.');
  };
}

function jobRow(job) {
  const status = job.status || {};
  const counters = status.counters || {};
  const failing = stateName(status.state) === 'failing';
  return h('tr', {'data-job': job.id, class: failing ? 'failing' : null},
    h('td', {}, h('a', {href: `#/jobs/${encodeURIComponent(job.id)}`}, job.name)),
    h('td', {}, job.type),
    h('td', {}, stateBadge(job)),
    h('td', {class: 'owner'}, status.owner || '—'),
    h('td', {class: 'num items'}, count(counters.itemsWritten)),
    // Errors: failed runs (a job that cannot even be built included) and
    // items the index refused.
    h('td', {class: 'num errors', title: status.lastError?.message || ''},
      count(num(counters.runsFailed) + num(counters.itemsFailed)), failing ? ' ⚠' : ''),
    h('td', {title: dateTime(status.lastSuccessTime)}, relative(status.lastSuccessTime)),
    h('td', {title: dateTime(status.nextRunTime)}, job.paused ? '—' : relative(status.nextRunTime)));
}

/** A job's page; returns a function that redraws it. */
export function renderJob(main, store, id, navigate) {
  const alert = h('div', {class: 'form-error', role: 'alert', hidden: true});
  const content = h('div');
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
        detail('Interval', durationText(durationSeconds(job.interval))),
        detail('Next run', job.paused ? 'paused' : `${relative(status.nextRunTime)} (${dateTime(status.nextRunTime)})`),
        detail('Last success', `${relative(status.lastSuccessTime)} (${dateTime(status.lastSuccessTime)})`),
        detail('Created', dateTime(job.createTime)), detail('Updated', dateTime(job.updateTime)),
        detail('Revision', job.revision))),
      h('section', {}, h('h2', {}, 'Parameters'), h('dl', {class: 'details'},
        params.map(([name, value]) => detail(name, typeof value === 'string' ? value : JSON.stringify(value))),
        secrets.map((name) => detail(name, 'set (write-only)')),
        params.length + secrets.length === 0 ? h('dd', {class: 'muted'}, 'Defaults only.') : null)),
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
  };
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
