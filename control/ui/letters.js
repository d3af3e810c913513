// A job's dead letters (documents the index refused): how many, the latest
// with their reasons, a look at one, and replay or purge them all.

import {call} from './api.js';
import {bytes, dateTime, h, replace} from './dom.js';

/**
 * Fills `section` with the job's dead letters; returns `update(itemsFailed)`
 * for every redraw: read again when the job's refused-items counter moves.
 */
export function renderLetters(section, id) {
  const body = h('div', {}, h('p', {class: 'muted'}, 'Loading…'));
  const shown = h('pre', {class: 'letter', id: 'letter-preview', hidden: true});
  const status = h('p', {class: 'muted', role: 'status', id: 'letters-status'});
  replace(section, h('h2', {}, 'Dead letters'), body, status, shown);
  let seen = null;

  const load = async () => {
    try {
      const page = await call('ListDeadLetters', {jobId: id, pageSize: 20});
      draw(page);
    } catch (e) {
      replace(body, h('p', {class: 'error'}, `Cannot list the dead letters: ${e.message}`));
    }
  };

  const act = async (label, method) => {
    try {
      const answer = await call(method, {jobId: id});
      replace(status, `${label}: ${answer.queued ?? answer.purged ?? 0} letter(s).`);
      load();
      setTimeout(() => { if (section.isConnected) load(); }, 3000);
    } catch (e) {
      replace(status, h('span', {class: 'error'}, `${label} failed: ${e.message}`));
    }
  };

  const view = async (letterId) => {
    try {
      const {deadLetter} = await call('GetDeadLetter', {jobId: id, letterId});
      shown.hidden = false;
      replace(shown, deadLetter.preview || '(empty)');
    } catch (e) {
      replace(status, h('span', {class: 'error'}, `Cannot show it: ${e.message}`));
    }
  };

  function draw(page) {
    const letters = page.deadLetters || [];
    const total = Number(page.total || 0);
    if (!total) {
      replace(body, h('p', {class: 'muted', id: 'letters-count'}, 'None: the index took every document.'));
      return;
    }
    replace(body,
      h('p', {id: 'letters-count'}, `${total} document(s) refused by the index${total > letters.length ? ` (latest ${letters.length} shown)` : ''}.`),
      h('div', {class: 'actions admin-only'},
        h('button', {type: 'button', onclick: () => act('Sent again', 'ReplayDeadLetters')}, 'Replay all'),
        h('button', {type: 'button', class: 'danger', onclick: () => {
          if (window.confirm('Forget every dead letter of this job? Their copies in the object store stay.')) act('Purged', 'PurgeDeadLetters');
        }}, 'Purge all')),
      h('table', {class: 'letters', 'aria-label': 'Dead letters'},
        h('thead', {}, h('tr', {}, h('th', {}, 'Document'), h('th', {}, 'Reason'), h('th', {}, 'When'),
          h('th', {class: 'num'}, 'Size'), h('th', {}, ''))),
        h('tbody', {}, letters.map((l) => h('tr', {'data-letter': l.letterId},
          h('td', {}, l.documentId), h('td', {class: 'message'}, `${l.status} ${l.reason}`),
          h('td', {}, dateTime(l.time)), h('td', {class: 'num'}, bytes(l.bytes)),
          h('td', {}, l.replayPending ? 'replay pending' : h('button', {type: 'button', onclick: () => view(l.letterId)}, 'View')))))));
  }

  return (itemsFailed) => {
    if (itemsFailed === seen) return;
    seen = itemsFailed;
    load();
  };
}
