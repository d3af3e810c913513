// The add/edit job form, generated from a job type's parameter specs
// (ListJobTypes): no code per job type. Checks mirror the server's
// (ingest-model's validate_params); the server's field violations are shown
// next to their fields.

import {ApiError, call} from './api.js';
import {dateTime, durationSeconds, durationText, h, parseDuration, replace} from './dom.js';

const MAX_STRING = 4096;
const MAX_LIST = 1000;
const MAX_URL = 2048;
const MAX_NAME = 200;

/**
 * Renders the form into `main`. `job` (from GetJob) makes it an edit form;
 * otherwise `typeName` preselects a type. `done(jobId)` is called after a
 * successful save.
 */
export async function renderForm(main, {job, typeName, done}) {
  replace(main, h('p', {class: 'muted'}, 'Loading job types…'));
  let types;
  try {
    types = (await call('ListJobTypes')).jobTypes || [];
  } catch (e) {
    replace(main, h('p', {class: 'error', role: 'alert'}, `Cannot load job types: ${e.message}`));
    return;
  }
  if (types.length === 0) {
    replace(main, h('p', {class: 'error', role: 'alert'},
      'No worker has published any job type yet: start a worker (ingest worker) and reload.'));
    return;
  }
  const editing = Boolean(job);
  const chosen = editing ? job.type : (typeName || types[0].name);
  const form = h('form', {class: 'job-form', novalidate: true, 'aria-label': editing ? 'Edit job' : 'Add job'});
  const summary = h('div', {class: 'form-error', role: 'alert', hidden: true});
  const typeField = h('div', {class: 'type-fields'});
  const typeSelect = h('select', {id: 'f-type', name: 'type', disabled: editing},
    types.map((t) => h('option', {value: t.name, selected: t.name === chosen},
      `${t.name}${t.workers?.length ? '' : ' (no live worker)'}`)));
  const heading = editing ? `Edit ${job.name}` : 'Add a job';
  replace(main, h('h1', {}, heading), form);

  const idInput = h('input', {id: 'f-id', name: 'id', maxlength: 63, autocomplete: 'off',
    placeholder: 'generated when empty', value: editing ? job.id : '', disabled: editing});
  const nameInput = h('input', {id: 'f-name', name: 'name', maxlength: MAX_NAME, required: true,
    value: editing ? job.name : ''});
  const intervalInput = h('input', {id: 'f-interval', name: 'interval', autocomplete: 'off',
    value: editing ? durationText(durationSeconds(job.interval)) : ''});
  const pausedInput = h('input', {id: 'f-paused', name: 'paused', type: 'checkbox', checked: editing && job.paused});
  const labelsInput = h('textarea', {id: 'f-labels', name: 'labels', rows: 2, placeholder: 'team=news'});
  const schedule = editing ? job.schedule || {} : {};
  const cronInput = h('input', {id: 'f-cron', name: 'cron', autocomplete: 'off', placeholder: '0 7 * * MON-FRI',
    value: schedule.cron || ''});
  const zoneInput = h('input', {id: 'f-zone', name: 'time_zone', autocomplete: 'off', placeholder: 'UTC',
    value: schedule.timeZone || ''});
  const windowsInput = h('textarea', {id: 'f-windows', name: 'windows', rows: 2, placeholder: '08:00-18:00'});
  windowsInput.value = (schedule.windows || []).map((w) => `${w.start}-${w.end}`).join('\n');
  const nextRuns = h('div', {class: 'help', id: 'next-runs', role: 'status'});
  const testButton = h('button', {type: 'button', title: 'Run it once on a worker and show what it would write'}, 'Test');
  const testResult = h('section', {id: 'test-result', 'aria-live': 'polite'});
  labelsInput.value = Object.entries(editing ? job.labels || {} : {}).map(([k, v]) => `${k}=${v}`).join('\n');

  form.append(
    summary,
    field('Type', 'type', typeSelect, h('span', {class: 'help', id: 'type-help'})),
    field('Job id', 'job_id', idInput,
      h('span', {class: 'help'}, 'Lowercase letters, digits and "-"; at most 63.')),
    field('Name', 'job.name', nameInput, null, true),
    field('Interval', 'job.interval', intervalInput, h('span', {class: 'help', id: 'interval-help'})),
    field('Start paused', 'job.paused', pausedInput),
    field('Labels', 'job.labels', labelsInput,
      h('span', {class: 'help'}, 'One key=value per line, e.g. team=news; for filtering and acting on many jobs.')),
    h('fieldset', {class: 'schedule'}, h('legend', {}, 'Schedule (optional)'),
      field('Cron', 'job.schedule.cron', cronInput,
        h('span', {class: 'help'}, 'Five fields (minute hour day month weekday) or @hourly, @daily…: runs at these times instead of every interval.')),
      field('Time zone', 'job.schedule.time_zone', zoneInput,
        h('span', {class: 'help'}, 'IANA name, e.g. Europe/Paris; UTC when empty.')),
      field('Only between', 'job.schedule.windows', windowsInput,
        h('span', {class: 'help'}, 'One HH:MM-HH:MM window per line (may cross midnight); runs start only inside.')),
      nextRuns),
    typeField,
    h('div', {class: 'actions'},
      h('button', {type: 'submit', class: 'primary'}, editing ? 'Save' : 'Create job'),
      testButton,
      h('a', {href: editing ? `#/jobs/${encodeURIComponent(job.id)}` : '#/', class: 'button'}, 'Cancel')),
    testResult,
  );
  if (editing) pausedInput.closest('.field').hidden = true;

  let params = [];
  const showType = () => {
    const type = types.find((t) => t.name === typeSelect.value) || types[0];
    replace(form.querySelector('#type-help'), type.description || '');
    const min = durationSeconds(type.minInterval);
    replace(form.querySelector('#interval-help'),
      `e.g. 30s, 5m, 1h. Default ${durationText(durationSeconds(type.defaultInterval))}, at least ${durationText(min)}.`);
    intervalInput.placeholder = durationText(durationSeconds(type.defaultInterval));
    params = (type.params || []).map((spec) => paramInput(spec, editing ? job : null));
    replace(typeField, h('fieldset', {}, h('legend', {}, `${type.name} parameters`), params.map((p) => p.field)));
    return type;
  };
  let type = showType();
  typeSelect.addEventListener('change', () => { type = showType(); });

  // The next runs, as the server computes them, while the schedule is edited.
  let previewTimer = null;
  const preview = () => {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(async () => {
      let request;
      try {
        request = {schedule: readSchedule(), count: 5};
        const seconds = intervalInput.value.trim() ? parseDuration(intervalInput.value)
          : durationSeconds(type.defaultInterval);
        request.interval = `${seconds}s`;
      } catch (e) {
        replace(nextRuns, h('span', {class: 'error'}, e.message));
        return;
      }
      try {
        const {runTimes = []} = await call('PreviewSchedule', request);
        replace(nextRuns, 'Next runs: ', runTimes.map((t) => dateTime(t)).join(' · ') || 'none');
      } catch (e) {
        const text = e.violations?.length ? e.violations.map((v) => `${v.field}: ${v.description}`).join('; ') : e.message;
        replace(nextRuns, h('span', {class: 'error'}, text));
      }
    }, 300);
  };
  const readSchedule = () => ({
    cron: cronInput.value.trim(),
    timeZone: zoneInput.value.trim(),
    windows: readWindows(windowsInput.value),
  });
  for (const input of [cronInput, zoneInput, windowsInput, intervalInput]) input.addEventListener('input', preview);
  preview();

  /** The form's values, checked; `errors` by field path. */
  const gather = () => {
    const errors = {};
    const id = idInput.value.trim();
    if (!editing && id && !/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(id)) {
      errors.job_id = 'use lowercase letters, digits and "-" only, not at the start or end';
    }
    const name = nameInput.value;
    if (!name.trim()) errors['job.name'] = 'must not be empty';
    else if ([...name].length > MAX_NAME) errors['job.name'] = `at most ${MAX_NAME} characters allowed`;
    let interval;
    if (intervalInput.value.trim()) {
      try {
        const seconds = parseDuration(intervalInput.value);
        if (seconds < durationSeconds(type.minInterval)) {
          errors['job.interval'] = `must be at least ${durationText(durationSeconds(type.minInterval))}`;
        }
        interval = `${seconds}s`;
      } catch (e) {
        errors['job.interval'] = e.message;
      }
    }
    let labels = {};
    try {
      labels = readLabels(labelsInput.value);
    } catch (e) {
      errors['job.labels'] = e.message;
    }
    let jobSchedule = {};
    try {
      jobSchedule = readSchedule();
    } catch (e) {
      errors['job.schedule.windows'] = e.message;
    }
    const values = {};
    for (const param of params) {
      try {
        const value = param.read();
        if (value !== undefined) values[param.spec.name] = value;
      } catch (e) {
        errors[`job.params.${param.spec.name}`] = e.message;
      }
    }
    checkRules(type, values, editing ? job.secretParamsSet || [] : [], errors);
    return {errors, id, name, interval, labels, jobSchedule, values};
  };

  // "Test": a dry run on a worker, nothing written; the answer below the form.
  testButton.addEventListener('click', async () => {
    clearErrors(form, summary);
    const {errors, values} = gather();
    if (Object.keys(errors).length) {
      showErrors(form, summary, Object.entries(errors).map(([f, d]) => ({field: f, description: d})));
      return;
    }
    testButton.disabled = true;
    replace(testResult, h('p', {class: 'muted'}, 'Running once on a worker (nothing is written)…'));
    try {
      const body = editing ? {id: job.id, type: job.type, params: values} : {type: type.name, params: values};
      showPreview(testResult, await call('PreviewJob', {job: body, maxDocuments: 5}));
    } catch (e) {
      if (e instanceof ApiError && e.violations.length) showErrors(form, summary, e.violations);
      replace(testResult, h('p', {class: 'error', role: 'alert'}, `Test failed: ${e.message}`));
    } finally {
      testButton.disabled = false;
    }
  });

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form, summary);
    const {errors, id, name, interval, labels, jobSchedule, values} = gather();
    if (Object.keys(errors).length) {
      showErrors(form, summary, Object.entries(errors).map(([f, d]) => ({field: f, description: d})));
      return;
    }
    const submit = form.querySelector('button[type=submit]');
    submit.disabled = true;
    try {
      let saved;
      if (editing) {
        const paths = ['name', 'params', 'labels', 'schedule'];
        const body = {id: job.id, revision: job.revision, type: job.type, name, params: values, labels,
          schedule: jobSchedule};
        if (interval) {
          body.interval = interval;
          paths.push('interval');
        }
        saved = (await call('UpdateJob', {job: body, updateMask: {paths}})).job;
      } else {
        const body = {name, type: type.name, params: values, paused: pausedInput.checked, labels, schedule: jobSchedule};
        if (interval) body.interval = interval;
        saved = (await call('CreateJob', {jobId: id, job: body})).job;
      }
      done(saved.id);
    } catch (e) {
      if (e instanceof ApiError && e.violations.length) {
        showErrors(form, summary, e.violations);
      } else if (e instanceof ApiError && e.code === 'ABORTED') {
        summary.hidden = false;
        replace(summary, 'This job changed since you opened it. ',
          h('a', {href: `#/jobs/${encodeURIComponent(job.id)}`}, 'See its latest version'), ' and edit again.');
      } else {
        summary.hidden = false;
        replace(summary, e.message);
      }
    } finally {
      submit.disabled = false;
    }
  });
}

/**
 * The type's rules across parameters (as ingest-model checks them): a
 * parameter required by another's value, sets given whole and one at a time,
 * at least one of some parameters holding something.
 * `kept`: secrets already stored (edit).
 */
function checkRules(type, values, kept, errors) {
  const given = (name) => values[name] !== undefined || kept.includes(name);
  const value = (name) => values[name] ?? type.params?.find((p) => p.name === name)?.defaultValue;
  const complain = (param, text) => { errors[`job.params.${param}`] ??= text; };
  for (const rule of type.rules || []) {
    if (rule.requiredIf) {
      const {param, when, equals} = rule.requiredIf;
      if (value(when) === equals && !given(param)) complain(param, `required when ${when} is ${equals}`);
    } else if (rule.oneOf) {
      const sets = (rule.oneOf.sets || []).map((set) => set.params || []);
      const chosen = sets.filter((set) => set.some(given));
      const alternatives = sets.map((set) => set.join(', ')).join('; or ');
      if (chosen.length === 0 && rule.oneOf.required && sets.length) {
        complain(sets[0][0], `required: give ${alternatives}`);
      } else if (chosen.length === 1) {
        const missing = chosen[0].filter((p) => !given(p));
        if (missing.length) complain(missing[0], `${chosen[0].join(', ')} go together; missing: ${missing.join(', ')}`);
      } else if (chosen.length > 1) {
        complain(chosen[1].find(given), `give only one of: ${alternatives}`);
      }
    } else if (rule.anyOf) {
      const params = rule.anyOf.params || [];
      const holds = (name) => {
        const v = value(name);
        return Array.isArray(v) ? v.length > 0 : v !== undefined && v !== null && v !== '';
      };
      if (params.length && !params.some(holds)) complain(params[0], `give at least one of: ${params.join(', ')}`);
    }
  }
}

/** A dry run's answer: what it would write, its warnings, error and cursor. */
function showPreview(section, answer) {
  const docs = answer.documents || [];
  const c = answer.counters || {};
  replace(section,
    h('h2', {}, 'Test run'),
    h('p', {id: 'test-summary'},
      `${answer.documentsTotal || 0} document(s) would be written, ${answer.objects || 0} object(s) archived; `,
      `${c.itemsFetched || 0} item(s) fetched, ${c.itemsFiltered || 0} filtered out, on ${answer.worker}. Nothing was written.`),
    answer.error ? h('pre', {class: 'error', id: 'test-error'}, answer.error) : null,
    (answer.warnings || []).map((w) => h('p', {class: 'warning'}, `Warning: ${w}`)),
    docs.map((d, i) => h('details', {open: i === 0, class: 'test-document'},
      h('summary', {}, `${d.index} / ${d.id}`),
      h('pre', {}, JSON.stringify(d.document, null, 2)))),
    answer.truncated ? h('p', {class: 'muted'}, 'More documents were left out to keep this short.') : null,
    h('details', {}, h('summary', {}, 'Cursor it would store'), h('pre', {}, JSON.stringify(answer.cursor ?? null))));
}

/** `HH:MM-HH:MM` lines as windows; the server checks the times. */
function readWindows(text) {
  return text.split('\n').map((line) => line.trim()).filter(Boolean).map((line, i) => {
    const parts = line.split('-').map((p) => p.trim());
    if (parts.length !== 2) throw new Error(`line ${i + 1}: write HH:MM-HH:MM, got "${line}"`);
    return {start: parts[0], end: parts[1]};
  });
}

/** `key=value` lines as a labels object; the server checks the characters. */
function readLabels(text) {
  const labels = {};
  text.split('\n').map((line) => line.trim()).forEach((line, i) => {
    if (!line) return;
    const at = line.indexOf('=');
    if (at <= 0) throw new Error(`line ${i + 1}: write key=value (the value may be empty), got "${line}"`);
    const key = line.slice(0, at).trim();
    if (key in labels) throw new Error(`line ${i + 1}: the label ${key} is given twice`);
    labels[key] = line.slice(at + 1).trim();
  });
  return labels;
}

/** A labelled field with its help and an error slot for `path`. */
function field(label, path, input, help, required = false) {
  const error = h('div', {class: 'field-error', 'data-field': path, id: `err-${path}`, hidden: true});
  input.setAttribute('aria-describedby', `err-${path}`);
  return h('div', {class: 'field', 'data-path': path},
    h('label', {for: input.id}, label, required ? h('span', {class: 'required', title: 'required'}, ' *') : null),
    input, help, error);
}

function clearErrors(form, summary) {
  summary.hidden = true;
  replace(summary);
  for (const slot of form.querySelectorAll('.field-error')) {
    slot.hidden = true;
    replace(slot);
  }
  for (const input of form.querySelectorAll('[aria-invalid]')) input.removeAttribute('aria-invalid');
}

/** Puts each violation next to its field; the rest in the summary. */
function showErrors(form, summary, violations) {
  const unplaced = [];
  for (const v of violations) {
    // A bad label (job.labels.<key>) is shown by the labels field, a bad
    // window (job.schedule.windows[i].start) by the windows field.
    const label = v.field.startsWith('job.labels.') ? v.field.slice('job.labels.'.length)
      : v.field.startsWith('job.schedule.windows[') ? v.field.slice('job.schedule.'.length) : null;
    const path = label === null ? v.field
      : v.field.startsWith('job.labels.') ? 'job.labels' : 'job.schedule.windows';
    const slot = [...form.querySelectorAll('.field-error')].find((s) => s.dataset.field === path);
    if (slot) {
      slot.hidden = false;
      const text = label === null ? v.description : `${label}: ${v.description}`;
      replace(slot, slot.textContent ? `${slot.textContent}; ${text}` : text);
      slot.closest('.field')?.querySelector('input, select, textarea')?.setAttribute('aria-invalid', 'true');
    } else {
      unplaced.push(`${v.field}: ${v.description}`);
    }
  }
  summary.hidden = false;
  replace(summary, unplaced.length ? unplaced.join('; ') : 'Please correct the fields marked below.');
  form.querySelector('[aria-invalid]')?.focus();
}

/** The input of one parameter and how to read (and check) its value. */
function paramInput(spec, job) {
  const kind = spec.kind;
  const id = `p-${spec.name}`;
  const current = job?.params?.[spec.name];
  const isSet = job?.secretParamsSet?.includes(spec.name);
  const fallback = current ?? spec.defaultValue;
  let input;
  let read;
  const text = () => input.value.trim();
  const requireIfEmpty = () => {
    if (spec.required) throw new Error(`required ${kindName(kind)} parameter is missing`);
    return undefined;
  };
  switch (kind) {
    case 'PARAM_KIND_BOOLEAN':
      input = h('input', {id, type: 'checkbox', checked: fallback === true});
      read = () => input.checked;
      break;
    case 'PARAM_KIND_ENUM': {
      const options = spec.allowedValues || [];
      input = h('select', {id},
        spec.required || fallback !== undefined ? null : h('option', {value: ''}, '—'),
        options.map((o) => h('option', {value: o, selected: o === fallback}, o)));
      read = () => (input.value === '' ? requireIfEmpty() : input.value);
      break;
    }
    case 'PARAM_KIND_INTEGER':
    case 'PARAM_KIND_NUMBER': {
      const integer = kind === 'PARAM_KIND_INTEGER';
      input = h('input', {id, type: 'number', step: integer ? 1 : 'any', min: spec.minimum, max: spec.maximum,
        value: fallback ?? ''});
      read = () => {
        if (!text()) return requireIfEmpty();
        const n = Number(text());
        if (!Number.isFinite(n)) throw new Error(`must be a number, got "${text()}"`);
        if (integer && !Number.isInteger(n)) throw new Error(`must be a whole number, got ${n}`);
        if (spec.minimum !== undefined && n < spec.minimum) throw new Error(`must be at least ${spec.minimum}, got ${n}`);
        if (spec.maximum !== undefined && n > spec.maximum) throw new Error(`must be at most ${spec.maximum}, got ${n}`);
        return n;
      };
      break;
    }
    case 'PARAM_KIND_LIST': {
      const allowed = spec.allowedValues || [];
      const chosen = Array.isArray(fallback) ? fallback : [];
      if (allowed.length) {
        input = h('div', {id, class: 'choices', role: 'group', 'aria-label': spec.name},
          allowed.map((o) => h('label', {class: 'choice'},
            h('input', {type: 'checkbox', value: o, checked: chosen.includes(o)}), ` ${o}`)));
        read = () => {
          const values = [...input.querySelectorAll('input:checked')].map((c) => c.value);
          return values.length ? values : requireIfEmpty();
        };
      } else {
        input = h('textarea', {id, rows: 3, placeholder: 'one per line'});
        input.value = chosen.join('\n');
        read = () => {
          const values = input.value.split('\n').map((v) => v.trim()).filter(Boolean);
          if (!values.length) return requireIfEmpty();
          const max = spec.maxLength ?? MAX_LIST;
          if (values.length > max) throw new Error(`at most ${max} items allowed, got ${values.length}`);
          values.forEach((v, i) => {
            if ([...v].length > MAX_STRING) throw new Error(`item ${i}: at most ${MAX_STRING} characters allowed`);
          });
          return values;
        };
      }
      break;
    }
    case 'PARAM_KIND_SECRET':
      input = h('input', {id, type: 'password', autocomplete: 'new-password',
        placeholder: isSet ? 'set — leave empty to keep it' : ''});
      read = () => {
        if (!input.value) return isSet ? undefined : requireIfEmpty();
        checkLength(input.value, spec.maxLength ?? MAX_STRING);
        return input.value;
      };
      break;
    case 'PARAM_KIND_URL':
      input = h('input', {id, type: 'url', value: fallback ?? '', placeholder: 'https://…', autocomplete: 'off'});
      read = () => {
        if (!text()) return requireIfEmpty();
        checkLength(text(), Math.min(spec.maxLength ?? MAX_URL, MAX_URL));
        let url;
        try {
          url = new URL(text());
        } catch {
          throw new Error('not a valid absolute URL');
        }
        if (url.protocol !== 'http:' && url.protocol !== 'https:') {
          throw new Error(`URL scheme must be http or https, not '${url.protocol.slice(0, -1)}'`);
        }
        return text();
      };
      break;
    case 'PARAM_KIND_DURATION':
      input = h('input', {id, value: fallback ?? '', placeholder: 'e.g. 30s, 5m', autocomplete: 'off'});
      read = () => {
        if (!text()) return requireIfEmpty();
        const seconds = parseDuration(text());
        if (spec.minimum !== undefined && seconds < spec.minimum) {
          throw new Error(`must be at least ${spec.minimum} seconds`);
        }
        if (spec.maximum !== undefined && seconds > spec.maximum) {
          throw new Error(`must be at most ${spec.maximum} seconds`);
        }
        return text();
      };
      break;
    case 'PARAM_KIND_JSON':
      input = h('textarea', {id, rows: 4, spellcheck: 'false', maxlength: spec.maxLength ?? MAX_STRING}, fallback ?? '');
      read = () => {
        if (!text()) return requireIfEmpty();
        checkLength(text(), spec.maxLength ?? MAX_STRING);
        try {
          JSON.parse(text());
        } catch (e) {
          throw new Error(`must be a JSON document: ${e.message}`);
        }
        return text();
      };
      break;
    default: {
      input = h('input', {id, value: fallback ?? '', maxlength: spec.maxLength ?? MAX_STRING, autocomplete: 'off'});
      const pattern = compile(spec.pattern);
      read = () => {
        if (!text()) return requireIfEmpty();
        checkLength(text(), spec.maxLength ?? MAX_STRING);
        if (pattern && !pattern.test(text())) throw new Error(`must match the pattern ${spec.pattern}`);
        return text();
      };
    }
  }
  const notes = [spec.description];
  if (spec.defaultValue !== undefined && spec.defaultValue !== null && kind !== 'PARAM_KIND_BOOLEAN') {
    notes.push(`Default: ${Array.isArray(spec.defaultValue) ? spec.defaultValue.join(', ') : spec.defaultValue}.`);
  }
  if (kind === 'PARAM_KIND_SECRET') notes.push('Write-only: never shown again.');
  const help = h('span', {class: 'help'}, notes.filter(Boolean).join(' '));
  return {spec, field: field(spec.name, `job.params.${spec.name}`, input, help, spec.required), read};
}

function checkLength(value, max) {
  const chars = [...value].length;
  if (chars > max) throw new Error(`at most ${max} characters allowed, got ${chars}`);
}

/** A spec's pattern as a whole-value JS regex, when JS can read it. */
function compile(pattern) {
  if (!pattern) return null;
  try {
    return new RegExp(`^(?:${pattern})$`, 'u');
  } catch {
    return null; // the server checks it
  }
}

function kindName(kind) {
  return kind.replace('PARAM_KIND_', '').toLowerCase();
}
