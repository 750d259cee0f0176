// Entry point: the token field, what it may do, the service status line and hash routing
// between the pages (#teach, #versions[/v3], #ledger, #playground, #audit).

import {readiness} from './api.js';
import * as audit from './audit.js';
import {$} from './dom.js';
import * as ledger from './ledger.js';
import * as playground from './playground.js';
import {canRead, refreshSession} from './session.js';
import {initTeach, showRecentJobs} from './teach.js';
import {getToken, setToken} from './token.js';
import * as versions from './versions.js';

const PAGES = {
  teach: () => {},
  versions: (arg) => versions.show(arg),
  ledger: () => ledger.show(),
  playground: () => playground.show(),
  audit: () => audit.show(),
};

function route() {
  const [name, ...rest] = location.hash.replace(/^#/, '').split('/');
  const page = PAGES[name] ? name : 'teach';
  for (const section of document.querySelectorAll('.page')) {
    section.hidden = section.id !== `page-${page}`;
  }
  for (const link of document.querySelectorAll('#nav a')) {
    link.classList.toggle('current', link.dataset.page === page);
  }
  document.title = `${page[0].toUpperCase()}${page.slice(1)} · modeledit console`;
  if (canRead()) PAGES[page](rest.length ? decodeURIComponent(rest.join('/')) : undefined);
}

async function status() {
  const ready = await readiness();
  const line = $('#service-status');
  if (!ready) {
    line.textContent = 'the service does not answer';
    return;
  }
  // A local checkpoint path is shown by its last part (the whole path as a tooltip).
  const model = ready.model.startsWith('/') ? ready.model.split('/').filter(Boolean).pop() : ready.model;
  line.title = ready.model;
  line.textContent = `${model} · serving ${ready.version ?? '?'}`
    + ` · worker ${ready.worker ? 'up' : 'down'}${ready.queue ? ` · ${ready.queue} queued` : ''}`;
}

function initToken() {
  const input = $('#token-input');
  input.value = getToken() ? '••••••••' : '';
  input.addEventListener('focus', () => {
    if (input.value === '••••••••') input.value = '';
  });
  $('#token-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    if (input.value !== '••••••••') setToken(input.value);
    input.value = getToken() ? '••••••••' : '';
    await refreshSession();
    route();
  });
  $('#token-forget').addEventListener('click', async () => {
    setToken(null);
    input.value = '';
    await refreshSession();
    route();
  });
}

async function start() {
  initToken();
  initTeach();
  ledger.initLedger();
  playground.initPlayground();
  await refreshSession();
  if (canRead()) showRecentJobs();
  window.addEventListener('hashchange', route);
  document.addEventListener('modeledit:changed', status);
  route();
  status();
  setInterval(status, 10000);
}

start();
