// The workers view: every live worker with its state, job types, jobs owned
// (by type) and load: CPU and memory with a chart over the last minutes
// (samples gathered while this view is open), and its heartbeat's age.

import {call} from './api.js';
import {bytes, count, dateTime, h, num, relative, replace, svg} from './dom.js';

const STATES = {WORKER_STATE_ACTIVE: 'active', WORKER_STATE_DRAINING: 'draining'};
/** Samples kept per worker: ten minutes of 10 s heartbeats. */
const SAMPLES = 60;
/** Worker name → [{time, cpu, rss}], oldest first; kept across reloads. */
const samples = new Map();

/** Draws the workers view; returns a function that reloads it. */
export function renderWorkers(main) {
  const body = h('tbody');
  const note = h('p', {class: 'muted', id: 'workers-count'}, 'Loading…');
  replace(main,
    h('div', {class: 'toolbar'}, h('h1', {}, 'Workers'), note),
    h('table', {class: 'workers', 'aria-label': 'Workers'},
      h('thead', {}, h('tr', {},
        h('th', {}, 'Worker'), h('th', {}, 'State'), h('th', {class: 'num'}, 'Jobs'), h('th', {}, 'Jobs by type'),
        h('th', {class: 'num'}, 'CPU'), h('th', {class: 'num'}, 'Memory'), h('th', {}, 'Last minutes'),
        h('th', {}, 'Heartbeat'), h('th', {class: 'num'}, 'Weight'), h('th', {class: 'num'}, 'Items written'),
        h('th', {}, 'Version'), h('th', {}, 'Started'))),
      body));
  return async () => {
    try {
      const workers = (await call('ListWorkers')).workers || [];
      workers.sort((a, b) => a.name.localeCompare(b.name));
      const jobs = workers.reduce((sum, w) => sum + num(w.jobsOwned), 0);
      replace(note, `${workers.length} live worker${workers.length === 1 ? '' : 's'}, ${jobs} jobs owned`);
      for (const w of workers) remember(w);
      replace(body, workers.map((w) => h('tr', {'data-worker': w.name},
        h('td', {}, w.name),
        h('td', {}, h('span', {class: `state state-${STATES[w.state] || 'unknown'}`}, STATES[w.state] || 'unknown')),
        h('td', {class: 'num jobs-owned'}, count(w.jobsOwned)),
        h('td', {class: 'by-type', title: (w.jobTypes || []).join(', ')}, byType(w)),
        h('td', {class: 'num cpu'}, w.cpuPercent === undefined ? '—' : `${w.cpuPercent.toFixed(1)} %`),
        h('td', {class: 'num memory'}, w.rssBytes === undefined ? '—' : bytes(w.rssBytes)),
        h('td', {}, sparkline(samples.get(w.name) || [])),
        h('td', {class: 'heartbeat', title: dateTime(w.heartbeatTime)}, relative(w.heartbeatTime)),
        h('td', {class: 'num'}, w.weight),
        h('td', {class: 'num'}, count(w.counters?.itemsWritten)),
        h('td', {}, w.version),
        h('td', {title: dateTime(w.startTime)}, relative(w.startTime)))));
    } catch (e) {
      replace(note, h('span', {class: 'error', role: 'alert'}, `Cannot list workers: ${e.message}`));
    }
  };
}

function byType(worker) {
  const entries = Object.entries(worker.jobsByType || {}).filter(([, n]) => num(n) > 0).sort(([a], [b]) => a.localeCompare(b));
  return entries.length ? entries.map(([type, n]) => `${type} ${count(n)}`).join(', ') : '—';
}

function remember(worker) {
  if (!worker.heartbeatTime || worker.cpuPercent === undefined) return;
  const list = samples.get(worker.name) || [];
  const time = Date.parse(worker.heartbeatTime);
  if (list.length && list[list.length - 1].time === time) return;
  list.push({time, cpu: worker.cpuPercent, rss: num(worker.rssBytes)});
  if (list.length > SAMPLES) list.shift();
  samples.set(worker.name, list);
}

/** CPU (line) and memory (area) of the samples seen, each on its own scale. */
function sparkline(list) {
  const width = 120;
  const height = 28;
  if (list.length < 2) return h('span', {class: 'muted'}, 'gathering…');
  const x = (i) => ((i / (list.length - 1)) * (width - 2) + 1).toFixed(1);
  const maxCpu = Math.max(1, ...list.map((s) => s.cpu));
  const maxRss = Math.max(1, ...list.map((s) => s.rss));
  const y = (v, max) => (height - 1 - (v / max) * (height - 2)).toFixed(1);
  const cpu = list.map((s, i) => `${x(i)},${y(s.cpu, maxCpu)}`).join(' ');
  const rss = `1,${height - 1} ${list.map((s, i) => `${x(i)},${y(s.rss, maxRss)}`).join(' ')} ${x(list.length - 1)},${height - 1}`;
  const last = list[list.length - 1];
  return svg('svg', {class: 'sparkline', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img',
    'aria-label': `CPU up to ${maxCpu.toFixed(1)} %, memory up to ${bytes(maxRss)} over ${list.length} samples`},
  svg('title', {}, `now ${last.cpu.toFixed(1)} % CPU, ${bytes(last.rss)}`),
  svg('polygon', {points: rss, class: 'memory'}),
  svg('polyline', {points: cpu, class: 'cpu'}));
}
