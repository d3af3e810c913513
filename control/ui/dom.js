// Building DOM nodes (text always goes in as text, never as HTML) and
// formatting the API's values for people.

/** h('a', {href: '#/'}, 'text', child, ...): an element. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (name === 'class') el.className = value;
    else if (value === true) el.setAttribute(name, '');
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** svg('rect', {x: 1}, ...): an SVG element (drawn by our own code). */
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

/** Replaces the children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

const STATES = {
  JOB_STATE_PENDING: 'pending',
  JOB_STATE_RUNNING: 'running',
  JOB_STATE_PAUSED: 'paused',
  JOB_STATE_UNSCHEDULABLE: 'unschedulable',
  JOB_STATE_FAILING: 'failing',
};

/** The short name of a job state ('running', ...). */
export function stateName(state) {
  return STATES[state] || 'unknown';
}

export const STATE_NAMES = Object.values(STATES);

/** The API enum value of a short state name. */
export function stateEnum(name) {
  return Object.keys(STATES).find((k) => STATES[k] === name) || '';
}

export function stateBadge(job) {
  const name = stateName(job.status?.state);
  return h('span', {class: `state state-${name}`, title: job.status?.stateReason || ''}, name);
}

/** A proto JSON int64/uint64 (a string) as a number. */
export function num(value) {
  const n = Number(value ?? 0);
  return Number.isFinite(n) ? n : 0;
}

export function count(value) {
  return num(value).toLocaleString('en-US');
}

export function bytes(value) {
  let n = num(value);
  for (const unit of ['B', 'KiB', 'MiB', 'GiB']) {
    if (n < 1024 || unit === 'GiB') return `${unit === 'B' ? n : n.toFixed(1)} ${unit}`;
    n /= 1024;
  }
  return `${n} B`;
}

/** "3 min ago", "in 20 s", or '—'. */
export function relative(timestamp, now = Date.now()) {
  if (!timestamp) return '—';
  const ms = Date.parse(timestamp) - now;
  const past = ms < 0;
  const text = humanSeconds(Math.round(Math.abs(ms) / 1000));
  if (text === '0 s') return 'now';
  return past ? `${text} ago` : `in ${text}`;
}

export function humanSeconds(seconds) {
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 86400) return `${(seconds / 3600).toFixed(1).replace(/\.0$/, '')} h`;
  return `${(seconds / 86400).toFixed(1).replace(/\.0$/, '')} d`;
}

export function dateTime(timestamp) {
  if (!timestamp) return '—';
  const d = new Date(timestamp);
  return Number.isNaN(d.getTime()) ? timestamp : d.toLocaleString('en-GB', {hour12: false});
}

/** Seconds of a proto JSON Duration ("300s", "1.5s"). */
export function durationSeconds(duration) {
  const match = /^(-?\d+(?:\.\d+)?)s$/.exec(duration || '');
  return match ? Number(match[1]) : 0;
}

/** "1h 30m" for 5400 seconds: what a person (and the server) can read. */
export function durationText(seconds) {
  let rest = Math.round(seconds);
  if (rest === 0) return '0s';
  const parts = [];
  for (const [unit, size] of [['d', 86400], ['h', 3600], ['m', 60], ['s', 1]]) {
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
  }
  return parts.join(' ');
}

// The units the server's duration parser (humantime) accepts, in seconds.
const UNITS = {
  nsec: 1e-9, ns: 1e-9, usec: 1e-6, us: 1e-6, 'µs': 1e-6, msec: 1e-3, ms: 1e-3,
  seconds: 1, second: 1, sec: 1, secs: 1, s: 1,
  minutes: 60, minute: 60, min: 60, mins: 60, m: 60,
  hours: 3600, hour: 3600, hr: 3600, hrs: 3600, h: 3600,
  days: 86400, day: 86400, d: 86400,
  weeks: 604800, week: 604800, w: 604800,
  months: 2630016, month: 2630016, M: 2630016,
  years: 31557600, year: 31557600, y: 31557600,
};

/** Seconds of "90s", "15m", "1h 30m"; throws a readable Error otherwise. */
export function parseDuration(text) {
  const source = text.trim();
  if (!source) throw new Error('must not be empty');
  const part = /(\d+)\s*([a-zA-Zµ]+)\s*/y;
  let seconds = 0;
  part.lastIndex = 0;
  while (part.lastIndex < source.length) {
    const at = part.lastIndex;
    const match = part.exec(source);
    if (!match || match.index !== at) {
      throw new Error('not a duration; write e.g. "90s", "15m" or "1h 30m"');
    }
    const unit = UNITS[match[2]];
    if (unit === undefined) throw new Error(`unknown unit "${match[2]}"; use s, m, h or d`);
    seconds += Number(match[1]) * unit;
  }
  return seconds;
}
