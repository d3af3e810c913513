// The workers view: every live worker with its state, job types, jobs owned
// and load (the totals of the jobs it owns).

import {call} from './api.js';
import {count, dateTime, h, num, relative, replace} from './dom.js';

const STATES = {WORKER_STATE_ACTIVE: 'active', WORKER_STATE_DRAINING: 'draining'};

/** Draws the workers view; returns a function that reloads it. */
export function renderWorkers(main) {
  const body = h('tbody');
  const note = h('p', {class: 'muted', id: 'workers-count'}, 'Loading…');
  replace(main,
    h('div', {class: 'toolbar'}, h('h1', {}, 'Workers'), note),
    h('table', {class: 'workers', 'aria-label': 'Workers'},
      h('thead', {}, h('tr', {},
        h('th', {}, 'Worker'), h('th', {}, 'State'), h('th', {}, 'Job types'), h('th', {class: 'num'}, 'Jobs'),
        h('th', {class: 'num'}, 'Weight'), h('th', {class: 'num'}, 'Items written'), h('th', {class: 'num'}, 'Runs'),
        h('th', {}, 'Version'), h('th', {}, 'Started'))),
      body));
  return async () => {
    try {
      const workers = (await call('ListWorkers')).workers || [];
      workers.sort((a, b) => a.name.localeCompare(b.name));
      const jobs = workers.reduce((sum, w) => sum + num(w.jobsOwned), 0);
      replace(note, `${workers.length} live worker${workers.length === 1 ? '' : 's'}, ${jobs} jobs owned`);
      replace(body, workers.map((w) => h('tr', {'data-worker': w.name},
        h('td', {}, w.name),
        h('td', {}, h('span', {class: `state state-${STATES[w.state] || 'unknown'}`}, STATES[w.state] || 'unknown')),
        h('td', {}, (w.jobTypes || []).join(', ')),
        h('td', {class: 'num jobs-owned'}, count(w.jobsOwned)),
        h('td', {class: 'num'}, w.weight),
        h('td', {class: 'num'}, count(w.counters?.itemsWritten)),
        h('td', {class: 'num'}, count(w.counters?.runs)),
        h('td', {}, w.version),
        h('td', {title: dateTime(w.startTime)}, relative(w.startTime)))));
    } catch (e) {
      replace(note, h('span', {class: 'error', role: 'alert'}, `Cannot list workers: ${e.message}`));
    }
  };
}
