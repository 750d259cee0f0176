// fetch() wrapper for the service's API: JSON in and out, the token as an Authorization
// header (never in the URL), and the API's error body ({detail, errors}) as an ApiError.

import {getToken} from './token.js';

export class ApiError extends Error {
  constructor(status, detail, errors = []) {
    super(detail);
    this.status = status;
    this.detail = detail;
    this.errors = errors;
  }
}

function headers(json) {
  const out = {Accept: 'application/json'};
  const token = getToken();
  if (token) out.Authorization = `Bearer ${token}`;
  if (json) out['Content-Type'] = 'application/json';
  return out;
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const detail = body && typeof body.detail === 'string'
    ? body.detail : `HTTP ${response.status} ${response.statusText}`.trim();
  const errors = body && Array.isArray(body.errors) ? body.errors : [];
  return new ApiError(response.status, detail, errors);
}

/** Call the API; resolves to the parsed JSON body, rejects with an ApiError. */
export async function api(path, {method = 'GET', body, query} = {}) {
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined && value !== null && value !== '') params.set(key, String(value));
    }
    const text = params.toString();
    if (text) url += `?${text}`;
  }
  let response;
  try {
    response = await fetch(url, {
      method,
      headers: headers(body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'same-origin',
    });
  } catch (exc) {
    throw new ApiError(0, `the service did not answer (${exc.message}); is it running?`);
  }
  if (!response.ok) throw await errorOf(response);
  if (response.status === 204) return null;
  return response.json();
}

/** A binary download (export) with the token header; resolves to a Blob. */
export async function download(path) {
  const response = await fetch(path, {headers: headers(false), cache: 'no-store'});
  if (!response.ok) throw await errorOf(response);
  return response.blob();
}

/** GET without throwing on 503: /ready answers its body with either status. */
export async function readiness() {
  try {
    const response = await fetch('/ready', {cache: 'no-store'});
    return await response.json();
  } catch {
    return null;
  }
}
