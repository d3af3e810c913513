// The control server's HTTP/JSON API: POST /api/ingest.v1.JobService/<Method>
// with proto3 JSON, and WatchJobs as a stream of JSON lines. A bearer token,
// when the server asks for one, is kept for this browser tab only.

const TOKEN_KEY = 'ingest.token';

/** An error answered by the API: its code, message and field violations. */
export class ApiError extends Error {
  constructor(httpStatus, body) {
    super(body.message || `HTTP ${httpStatus}`);
    this.httpStatus = httpStatus;
    this.code = body.code || 'UNKNOWN';
    this.violations = body.fieldViolations || [];
  }
}

let onUnauthenticated = () => {};

/** Called with the server's message when a call needs a (new) token. */
export function whenUnauthenticated(callback) {
  onUnauthenticated = callback;
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function headers() {
  const result = {'content-type': 'application/json'};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) result.authorization = `Bearer ${token}`;
  return result;
}

async function failure(response) {
  const text = await response.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = {message: text || response.statusText};
  }
  const error = new ApiError(response.status, body);
  if (response.status === 401) onUnauthenticated(error.message);
  return error;
}

/** What the token of this tab may do: {auth, role} (role read, worker or admin). */
export async function session() {
  const response = await fetch('/api/session', {method: 'POST', headers: headers()});
  if (!response.ok) throw await failure(response);
  return response.json();
}

/** Calls a JobService method; resolves to the response message. */
export async function call(method, request = {}) {
  let response;
  try {
    response = await fetch(`/api/ingest.v1.JobService/${method}`, {
      method: 'POST', headers: headers(), body: JSON.stringify(request),
    });
  } catch (e) {
    throw new ApiError(0, {code: 'UNAVAILABLE', message: `control cannot be reached (${e.message})`});
  }
  if (!response.ok) throw await failure(response);
  return response.json();
}

/**
 * Follows WatchJobs (`request`: e.g. a labelSelector) until stopped:
 * `onUpdate(message, fresh)` for every
 * message (`fresh` when a new snapshot starts: forget what you hold),
 * `onStatus('live' | 'connecting' | 'error' | 'invalid', detail)` as the
 * stream comes and goes ('invalid': the request was refused, e.g. a bad
 * selector; no retry). Reconnects from the last revision seen, or with a fresh snapshot
 * when that revision is gone. Returns a function that stops it.
 */
export function watchJobs(request, onUpdate, onStatus) {
  const controller = new AbortController();
  let revision = 0;
  let synced = false;

  async function once() {
    const fresh = !(synced && revision > 0);
    const response = await fetch('/api/ingest.v1.JobService/WatchJobs', {
      method: 'POST', headers: headers(), signal: controller.signal,
      body: JSON.stringify(fresh ? request : {...request, startRevision: String(revision)}),
    });
    if (!response.ok) throw await failure(response);
    let first = fresh;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return;
      buffer += value;
      let newline;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        if (!line.trim()) continue;
        const message = JSON.parse(line);
        if (message.error) throw new ApiError(200, message.error);
        revision = Number(message.revision) || revision;
        if (message.synced || !message.snapshot) {
          synced = true;
          onStatus('live');
        }
        onUpdate(message, first);
        first = false;
      }
    }
  }

  (async () => {
    let delay = 500;
    while (!controller.signal.aborted) {
      onStatus('connecting');
      try {
        await once();
        delay = 500;
      } catch (e) {
        if (controller.signal.aborted) return;
        if (e.code === 'OUT_OF_RANGE') synced = false; // compacted: start over
        if (e.code === 'INVALID_ARGUMENT') {
          onStatus('invalid', e);
          return;
        }
        onStatus('error', e.message);
        if (e.code === 'UNAUTHENTICATED') return; // resumed after a token is given
      }
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 10000);
    }
  })();
  return () => controller.abort();
}
