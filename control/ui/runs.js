// A job's run history (ListJobRuns): a chart of items written and duration
// per run, drawn as SVG by this code, and a table of the runs.

import {call} from './api.js';
import {bytes, count, dateTime, durationSeconds, h, num, replace, svg} from './dom.js';

const OUTCOMES = {
  RUN_OUTCOME_SUCCEEDED: 'succeeded',
  RUN_OUTCOME_WARNING: 'warning',
  RUN_OUTCOME_FAILED: 'failed',
};

/**
 * Fills `section` with the job's runs; returns `update(runsCounter)`, to be
 * called on every redraw: the history is read again when the job's run
 * counter moves (and once more a few seconds later, as runs reach the
 * history in batches).
 */
export function renderRuns(section, id) {
  const body = h('div', {}, h('p', {class: 'muted'}, 'Loading…'));
  replace(section, h('h2', {}, 'Runs'), body);
  let seen = null;
  let later = null;

  const load = async () => {
    if (!section.isConnected && seen !== null) return;
    try {
      const {runs = []} = await call('ListJobRuns', {id});
      draw(body, runs);
    } catch (e) {
      replace(body, h('p', {class: 'error', role: 'alert'}, `Cannot load the runs: ${e.message}`));
    }
  };

  return (runsCounter) => {
    if (runsCounter === seen) return;
    seen = runsCounter;
    load();
    clearTimeout(later);
    later = setTimeout(() => { if (section.isConnected) load(); }, 3000);
  };
}

function draw(body, runs) {
  if (!runs.length) {
    replace(body, h('p', {class: 'muted', id: 'runs-empty'}, 'No run yet: runs show here a few seconds after they end.'));
    return;
  }
  replace(body,
    chart([...runs].reverse()),
    h('table', {class: 'runs', 'aria-label': 'Runs'},
      h('thead', {}, h('tr', {},
        h('th', {}, 'Started'), h('th', {class: 'num'}, 'Duration'), h('th', {}, 'Outcome'),
        h('th', {class: 'num'}, 'Fetched'), h('th', {class: 'num'}, 'Written'), h('th', {class: 'num'}, 'Failed'),
        h('th', {class: 'num'}, 'Filtered'), h('th', {class: 'num'}, 'Bytes'), h('th', {}, 'Worker'),
        h('th', {}, 'Message'))),
      h('tbody', {}, runs.map(runRow))));
}

function runRow(run) {
  const c = run.counters || {};
  const outcome = OUTCOMES[run.outcome] || 'unknown';
  return h('tr', {'data-run': `${run.epoch}-${run.seq}`, class: `run-${outcome}`},
    h('td', {}, dateTime(run.startTime)),
    h('td', {class: 'num'}, seconds(durationSeconds(run.duration))),
    h('td', {}, h('span', {class: `state outcome-${outcome}`}, outcome)),
    h('td', {class: 'num'}, count(c.itemsFetched)), h('td', {class: 'num'}, count(c.itemsWritten)),
    h('td', {class: 'num'}, count(c.itemsFailed)), h('td', {class: 'num'}, count(c.itemsFiltered)),
    h('td', {class: 'num'}, bytes(c.bytesFetched)), h('td', {}, run.worker || '—'),
    h('td', {class: 'message'}, run.message || ''));
}

function seconds(s) {
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  return s < 10 ? `${s.toFixed(2)} s` : `${Math.round(s)} s`;
}

/** Bars: items written per run (failed runs in red); line: run duration. Oldest left. */
function chart(runs) {
  const width = 640;
  const height = 140;
  const pad = {left: 44, right: 44, top: 10, bottom: 18};
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const written = runs.map((r) => num(r.counters?.itemsWritten));
  const durations = runs.map((r) => durationSeconds(r.duration));
  const maxItems = Math.max(1, ...written);
  const maxDuration = Math.max(0.001, ...durations);
  const step = plotW / runs.length;
  const barW = Math.max(1, step * 0.7);
  const y = (v, max) => pad.top + plotH - (v / max) * plotH;
  const bars = runs.map((run, i) => {
    const top = y(written[i], maxItems);
    const outcome = OUTCOMES[run.outcome] || 'unknown';
    return svg('rect', {x: (pad.left + i * step + (step - barW) / 2).toFixed(1), y: top.toFixed(1),
      width: barW.toFixed(1), height: Math.max(outcome === 'failed' ? 2 : 0, pad.top + plotH - top).toFixed(1),
      class: `bar bar-${outcome}`},
    svg('title', {}, `${dateTime(run.startTime)}: ${count(written[i])} written in ${seconds(durations[i])} (${outcome})`));
  });
  const points = durations.map((d, i) => `${(pad.left + (i + 0.5) * step).toFixed(1)},${y(d, maxDuration).toFixed(1)}`);
  return svg('svg', {class: 'runs-chart', viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-label': `Items written (bars, up to ${count(maxItems)}) and duration (line, up to ${seconds(maxDuration)}) of the last ${runs.length} runs`},
  svg('line', {x1: pad.left, y1: pad.top + plotH, x2: width - pad.right, y2: pad.top + plotH, class: 'axis'}),
  svg('text', {x: pad.left - 4, y: pad.top + 8, 'text-anchor': 'end', class: 'tick items'}, count(maxItems)),
  svg('text', {x: pad.left - 4, y: pad.top + plotH, 'text-anchor': 'end', class: 'tick items'}, '0'),
  svg('text', {x: width - pad.right + 4, y: pad.top + 8, class: 'tick duration'}, seconds(maxDuration)),
  svg('text', {x: pad.left, y: height - 3, class: 'tick'}, 'oldest'),
  svg('text', {x: width - pad.right, y: height - 3, 'text-anchor': 'end', class: 'tick'}, 'newest'),
  bars,
  // Runs under a millisecond have no duration worth a line.
  Math.max(...durations) > 0 ? svg('polyline', {points: points.join(' '), class: 'duration-line'}) : null);
}
