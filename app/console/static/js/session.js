// What the current token may do (GET /whoami: read, edit, admin) and what the console hides:
// an element marked data-mutating="edit" or "admin" is shown only to a caller with that scope
// (admin includes edit includes read).

import {api} from './api.js';
import {$} from './dom.js';

const state = {scopes: [], token: 'none', name: 'anonymous', readNeedsToken: false,
  writeNeedsToken: false, adminNeedsToken: false};

export function canRead() {
  return state.scopes.includes('read');
}

export function canEdit() {
  return state.scopes.includes('edit');
}

export function canAdmin() {
  return state.scopes.includes('admin');
}

/** The older name of canEdit. */
export const canWrite = canEdit;

/** The name job records and the audit trail show for this caller (never the token). */
export function callerName() {
  return state.name;
}

function allowed(scope) {
  return scope === 'admin' ? canAdmin() : canEdit();
}

/** Mark an element as changing the model: hidden unless the caller has `scope`. */
export function mutating(el, scope = 'edit') {
  el.dataset.mutating = scope;
  el.hidden = !allowed(scope);
  return el;
}

/** Hide every marked element the caller may not use (under `root`). */
export function applyScopes(root = document) {
  for (const el of root.querySelectorAll('[data-mutating]')) {
    el.hidden = !allowed(el.dataset.mutating || 'edit');
  }
}

function applyMode() {
  applyScopes();
  document.body.classList.toggle('read-only', !canEdit());
  $('#teach-readonly').hidden = canEdit();
  const badge = $('#scope-badge');
  if (canAdmin()) {
    badge.textContent = 'read · edit · admin';
    badge.className = 'badge ok';
  } else if (canEdit()) {
    badge.textContent = 'read · edit';
    badge.className = 'badge ok';
  } else if (canRead()) {
    badge.textContent = 'read-only';
    badge.className = 'badge warn';
  } else {
    badge.textContent = 'no access';
    badge.className = 'badge bad';
  }
  badge.title = canRead() || canEdit() ? `recorded as ${state.name}` : '';
  const banner = $('#banner');
  if (!canRead()) {
    banner.textContent = state.token === 'unknown'
      ? 'This token is not valid here. Enter the read, edit or admin token above.'
      : 'This service needs a token to read. Enter the read, edit or admin token above.';
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
    state.name = who.name;
    state.readNeedsToken = who.read_needs_token;
    state.writeNeedsToken = who.write_needs_token;
    state.adminNeedsToken = who.admin_needs_token;
  } catch {
    state.scopes = [];
    state.token = 'none';
    state.name = 'anonymous';
  }
  applyMode();
  return state;
}
