// Facts ledger: GET /facts, the same answer scripts get. Which facts a version knows, which
// version taught each one, and whether a later batch of the lineage overrode it.

import {api} from './api.js';
import {$, h, showError, when} from './dom.js';
import {fillVersionSelect, loadVersions} from './lineage.js';

const PAGE = 25;
let offset = 0;
let lastPage = null;

function statusCell(fact) {
  if (fact.current) return h('td', {}, h('span', {class: 'badge ok', text: 'current'}));
  return h('td', {}, h('span', {class: 'badge warn', text: 'overridden by '}),
    ' ', h('a', {href: `#versions/${encodeURIComponent(fact.overridden_by)}`, text: fact.overridden_by}));
}

function render(page) {
  const body = $('#ledger-table tbody');
  body.replaceChildren(...page.facts.map((fact) => h('tr', {class: fact.current ? '' : 'overridden'},
    h('td', {text: fact.subject}),
    h('td', {}, h('div', {text: fact.text}), h('div', {class: 'muted mono', text: fact.prompt})),
    h('td', {}, h('div', {text: fact.target_new}),
      fact.target_true ? h('div', {class: 'muted', text: `was ${fact.target_true}`}) : null),
    h('td', {}, h('a', {href: `#versions/${encodeURIComponent(fact.taught_by)}`, text: fact.taught_by}),
      h('div', {class: 'muted', text: when(fact.taught_at)})),
    statusCell(fact))));
  const range = page.total ? `${page.offset + 1}–${page.offset + page.facts.length} of ${page.total}` : 'none';
  $('#ledger-summary').textContent = `Facts known to ${page.version}${page.active ? ' (active)' : ''}`
    + `${page.q ? ` matching “${page.q}”` : ''}: ${range}.`;
  $('#ledger-prev').disabled = page.offset === 0;
  $('#ledger-next').disabled = page.next_offset === null;
}

async function search(newOffset = 0) {
  const errors = $('#ledger-errors');
  showError(errors, '');
  try {
    const page = await api('/facts', {query: {q: $('#ledger-q').value, version: $('#ledger-version').value,
      limit: PAGE, offset: newOffset}});
    offset = page.offset;
    lastPage = page;
    render(page);
  } catch (exc) {
    showError(errors, `${exc.detail || exc.message}${exc.status ? ` (HTTP ${exc.status})` : ''}`);
  }
}

export function initLedger() {
  $('#ledger-form').addEventListener('submit', (event) => {
    event.preventDefault();
    search(0);
  });
  $('#ledger-version').addEventListener('change', () => search(0));
  $('#ledger-prev').addEventListener('click', () => search(Math.max(0, offset - PAGE)));
  $('#ledger-next').addEventListener('click', () => {
    if (lastPage && lastPage.next_offset !== null) search(lastPage.next_offset);
  });
}

export async function show() {
  try {
    const list = await loadVersions();
    const select = $('#ledger-version');
    fillVersionSelect(select, list, select.value || list.active);
  } catch (exc) {
    showError($('#ledger-errors'), exc.message);
    return;
  }
  await search(offset);
}
