// Audit trail: GET /audit, every change of the active version (commit, rollback, roll forward,
// revert, quarantine), who made it (a token's name or a short hash, never a token) and when.

import {api} from './api.js';
import {$, h, showError, when} from './dom.js';

const PAGE = 50;
const ACTIONS = {init: 'initial version', commit: 'commit', rollback: 'rollback',
  roll_forward: 'roll forward', switch: 'switch branch', revert: 'revert',
  quarantine: 'quarantine'};

function versionLink(id) {
  return id ? h('a', {href: `#versions/${encodeURIComponent(id)}`, text: id}) : '—';
}

function render(entries) {
  $('#audit-table tbody').replaceChildren(...entries.map((entry) => h('tr',
    {dataset: {action: entry.action}},
    h('td', {text: when(entry.at)}),
    h('td', {}, h('span', {class: 'badge', text: ACTIONS[entry.action] || entry.action})),
    h('td', {class: 'mono', text: entry.actor || 'worker'}),
    h('td', {}, versionLink(entry.from_version), ' → ', versionLink(entry.to_version)),
    h('td', {class: 'mono muted', text: entry.job_id || ''}),
    h('td', {class: 'muted', text: entry.detail || ''}))));
  $('#audit-summary').textContent = entries.length
    ? `The ${entries.length} latest changes of the active version, newest first.`
    : 'The active version has not changed yet.';
}

export async function show() {
  const errors = $('#audit-errors');
  showError(errors, '');
  try {
    render(await api('/audit', {query: {limit: PAGE}}));
  } catch (exc) {
    showError(errors, `${exc.detail || exc.message}${exc.status ? ` (HTTP ${exc.status})` : ''}`);
  }
}
