// Import and export: OPML subscription lists (rss jobs) and JSON exports of
// any jobs. An export carries no secret values; importing one asks for them.

import {call} from './api.js';
import {h, parseDuration, replace} from './dom.js';

const OUTCOMES = {
  FEED_IMPORT_CREATED: 'created',
  FEED_IMPORT_WOULD_CREATE: 'would be created',
  FEED_IMPORT_DUPLICATE: 'already read',
  FEED_IMPORT_INVALID: 'invalid',
};

/** Draws the import/export view. */
export function renderTransfer(main) {
  const selector = h('input', {id: 'export-selector', type: 'search', size: 28, placeholder: 'all jobs'});
  const exportNote = h('p', {class: 'muted', role: 'status', id: 'export-note'});
  const download = async (method, file, type, pick) => {
    try {
      const labelSelector = selector.value.trim();
      const answer = await call(method, labelSelector ? {labelSelector} : {});
      const url = URL.createObjectURL(new Blob([pick(answer)], {type}));
      const link = h('a', {href: url, download: file});
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      replace(exportNote, `${file} saved.`);
    } catch (e) {
      replace(exportNote, h('span', {class: 'error'}, `${method} failed: ${e.message}`));
    }
  };

  const text = h('textarea', {id: 'import-text', rows: 8, placeholder: 'Paste an OPML document or a JSON export, or choose a file'});
  const file = h('input', {id: 'import-file', type: 'file', accept: '.opml,.xml,.json,application/json,text/xml'});
  const interval = h('input', {id: 'import-interval', autocomplete: 'off', placeholder: "the rss type's default"});
  const labels = h('input', {id: 'import-labels', autocomplete: 'off', placeholder: 'source=opml'});
  const secrets = h('div', {id: 'import-secrets'});
  const result = h('div', {id: 'import-result', role: 'status'});
  file.addEventListener('change', async () => {
    if (file.files?.[0]) {
      text.value = await file.files[0].text();
      showSecrets();
    }
  });
  text.addEventListener('change', () => showSecrets());

  /** A JSON export's jobs, or null for anything else. */
  const exportedJobs = () => {
    const value = text.value.trim();
    if (!value.startsWith('{') && !value.startsWith('[')) return null;
    const parsed = JSON.parse(value);
    return Array.isArray(parsed) ? parsed : parsed.jobs || [];
  };

  /** For a JSON export: a password field per secret each job needs. */
  function showSecrets() {
    let jobs;
    try {
      jobs = exportedJobs();
    } catch (e) {
      replace(secrets, h('p', {class: 'error'}, `Not valid JSON: ${e.message}`));
      return;
    }
    if (!jobs) return replace(secrets);
    const needing = jobs.filter((j) => (j.secretParamsSet || []).length);
    replace(secrets, h('p', {class: 'muted'}, `${jobs.length} job(s) in this export.`),
      needing.map((job) => h('fieldset', {}, h('legend', {}, `Secrets of ${job.name || job.id}`),
        job.secretParamsSet.map((name) => h('div', {class: 'field'},
          h('label', {for: `secret-${job.id}-${name}`}, name),
          h('input', {id: `secret-${job.id}-${name}`, type: 'password', autocomplete: 'off',
            'data-job': job.id, 'data-secret': name}))))));
  }

  async function run(validateOnly) {
    replace(result, 'Working…');
    try {
      const jobs = exportedJobs();
      if (jobs) {
        for (const input of secrets.querySelectorAll('input[data-secret]')) {
          const job = jobs.find((j) => j.id === input.dataset.job);
          if (job && input.value) job.params = {...job.params, [input.dataset.secret]: input.value};
        }
        const {results = []} = await call('ImportJobs', {jobs, validateOnly});
        replace(result, h('table', {class: 'import', 'aria-label': 'Import result'},
          h('thead', {}, h('tr', {}, h('th', {}, 'Job'), h('th', {}, 'Outcome'))),
          h('tbody', {}, results.map((r) => h('tr', {},
            h('td', {}, r.code ? r.id : h('a', {href: `#/jobs/${encodeURIComponent(r.id)}`}, r.id)),
            h('td', {class: r.code ? 'error' : ''}, r.code ? r.message : (validateOnly ? 'valid' : 'created')))))));
        return;
      }
      const request = {opml: text.value, validateOnly};
      if (interval.value.trim()) request.interval = `${parseDuration(interval.value)}s`;
      const pairs = labels.value.split(',').map((p) => p.trim()).filter(Boolean);
      request.labels = Object.fromEntries(pairs.map((p) => [p.split('=')[0].trim(), (p.split('=')[1] || '').trim()]));
      const {feeds = []} = await call('ImportOpml', request);
      const counts = {};
      for (const f of feeds) counts[OUTCOMES[f.outcome]] = (counts[OUTCOMES[f.outcome]] || 0) + 1;
      replace(result,
        h('p', {id: 'import-summary'}, Object.entries(counts).map(([k, n]) => `${n} ${k}`).join(', ') || 'No feed in it.'),
        h('table', {class: 'import', 'aria-label': 'Import result'},
          h('thead', {}, h('tr', {}, h('th', {}, 'Feed'), h('th', {}, 'URL'), h('th', {}, 'Outcome'))),
          h('tbody', {}, feeds.map((f) => h('tr', {},
            h('td', {}, f.title || '—'), h('td', {}, f.url),
            h('td', {class: f.outcome === 'FEED_IMPORT_INVALID' ? 'error' : ''},
              f.jobId ? h('a', {href: `#/jobs/${encodeURIComponent(f.jobId)}`}, OUTCOMES[f.outcome])
                : `${OUTCOMES[f.outcome] || f.outcome}${f.message ? `: ${f.message}` : ''}`))))));
    } catch (e) {
      const details = e.violations?.length ? `: ${e.violations.map((v) => `${v.field}: ${v.description}`).join('; ')}` : '';
      replace(result, h('p', {class: 'error', role: 'alert'}, `Import failed: ${e.message}${details}`));
    }
  }

  replace(main,
    h('h1', {}, 'Import and export'),
    h('section', {}, h('h2', {}, 'Export'),
      h('p', {class: 'muted'}, 'Secret values are never exported; importing a JSON export asks for them again.'),
      h('div', {class: 'actions'},
        h('label', {}, 'Labels ', selector),
        h('button', {type: 'button', onclick: () => download('ExportOpml', 'ingest-feeds.opml', 'text/x-opml',
          (a) => a.opml)}, 'Export OPML (rss jobs)'),
        h('button', {type: 'button', onclick: () => download('ExportJobs', 'ingest-jobs.json', 'application/json',
          (a) => JSON.stringify({jobs: a.jobs || []}, null, 2))}, 'Export JSON (all jobs)')),
      exportNote),
    h('section', {class: 'admin-only'}, h('h2', {}, 'Import'),
      h('div', {class: 'field'}, h('label', {for: 'import-file'}, 'File'), file),
      h('div', {class: 'field'}, h('label', {for: 'import-text'}, 'Or paste'), text),
      h('div', {class: 'field'}, h('label', {for: 'import-interval'}, 'Interval (OPML)'), interval),
      h('div', {class: 'field'}, h('label', {for: 'import-labels'}, 'Labels for the new jobs (OPML)'), labels),
      secrets,
      h('div', {class: 'actions'},
        h('button', {type: 'button', onclick: () => run(true)}, 'Preview'),
        h('button', {type: 'button', class: 'primary', onclick: () => run(false)}, 'Import')),
      result));
}
