// What the current token may do (GET /whoami), and read-only mode: elements marked
// data-mutating are hidden when the caller cannot change the model.

import {api} from './api.js';
import {$} from './dom.js';

const state = {scopes: [], token: 'none', readNeedsToken: false, writeNeedsToken: false};

export function canRead() {
  return state.scopes.includes('read');
}

export function canWrite() {
  return state.scopes.includes('write');
}

/** Mark an element as mutating: hidden whenever the caller cannot write. */
export function mutating(el) {
  el.dataset.mutating = '';
  el.hidden = !canWrite();
  return el;
}

function applyMode() {
  for (const el of document.querySelectorAll('[data-mutating]')) el.hidden = !canWrite();
  document.body.classList.toggle('read-only', !canWrite());
  $('#teach-readonly').hidden = canWrite();
  const badge = $('#scope-badge');
  if (canWrite()) {
    badge.textContent = 'read + write';
    badge.className = 'badge ok';
  } else if (canRead()) {
    badge.textContent = 'read-only';
    badge.className = 'badge warn';
  } else {
    badge.textContent = 'no access';
    badge.className = 'badge bad';
  }
  const banner = $('#banner');
  if (!canRead()) {
    banner.textContent = state.token === 'unknown'
      ? 'This token is not valid here. Enter the read or API token above.'
      : 'This service needs a token to read. Enter the read or API token above.';
    banner.hidden = false;
  } else if (state.token === 'unknown') {
    banner.textContent = 'This token matches no configured token; you have anonymous access only.';
    banner.hidden = false;
  } else {
    banner.hidden = true;
  }
}

/** Ask the service what the current token may do, then show or hide mutating controls. */
export async function refreshSession() {
  try {
    const who = await api('/whoami');
    state.scopes = who.scopes;
    state.token = who.token;
    state.readNeedsToken = who.read_needs_token;
    state.writeNeedsToken = who.write_needs_token;
  } catch {
    state.scopes = [];
    state.token = 'none';
  }
  applyMode();
  return state;
}
