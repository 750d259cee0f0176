// Teach: rows of facts (or pasted JSON/CSV), client-side checks that mirror the API, the
// method choice read from the API's OpenAPI schema, submit, then live job progress.

import {api, ApiError} from './api.js';
import {$, h, showError} from './dom.js';
import {parseFacts} from './facts-input.js';
import {followJob} from './jobs.js';
import {checkFacts, summary} from './validate.js';

const FIELDS = [
  {name: 'subject', label: 'Subject', placeholder: 'Danielle Darrieux'},
  {name: 'prompt', label: "Prompt ('{}' = subject)", placeholder: 'The mother tongue of {} is'},
  {name: 'target_new', label: 'New target', placeholder: 'English'},
  {name: 'target_true', label: 'True target (optional)', placeholder: 'French'},
  {name: 'question', label: 'Question, as a user asks it (optional)',
    placeholder: 'What is the mother tongue of Danielle Darrieux?', wide: true},
];

const RECENT_JOBS = 5;

const rows = () => [...document.querySelectorAll('#fact-rows .fact-row')];

function renumber() {
  rows().forEach((row, i) => {
    row.querySelector('legend').textContent = `Fact ${i + 1}`;
    row.dataset.index = String(i);
    row.querySelector('.remove').disabled = rows().length === 1;
  });
}

function field(spec, value) {
  const id = `f-${spec.name}-${Math.random().toString(36).slice(2, 9)}`;
  const input = spec.multiline
    ? h('textarea', {id, name: spec.name, rows: 1, placeholder: spec.placeholder,
      spellcheck: 'false'})
    : h('input', {id, name: spec.name, type: 'text', placeholder: spec.placeholder,
      spellcheck: 'false', autocomplete: 'off'});
  input.value = value || '';
  return h('div', {class: `field${spec.wide ? ' wide' : ''}`},
    h('label', {for: id, text: spec.label}), input,
    h('div', {class: 'field-error', dataset: {for: spec.name}}));
}

/** Add a fact row (optionally filled with a fact). */
export function addRow(fact = {}) {
  const row = h('fieldset', {class: 'fact-row'}, h('legend'));
  for (const spec of FIELDS) row.append(field(spec, fact[spec.name]));
  row.append(field({name: 'paraphrase_prompts', label: 'Paraphrases (optional, one per line)',
    placeholder: 'Danielle Darrieux was born speaking', multiline: true, wide: true},
  (fact.paraphrase_prompts || []).join('\n')));
  row.append(h('button', {type: 'button', class: 'remove', text: 'Remove',
    onclick: () => {
      row.remove();
      renumber();
    }}));
  $('#fact-rows').append(row);
  renumber();
  return row;
}

function readRow(row) {
  const value = (name) => row.querySelector(`[name="${name}"]`).value;
  const fact = {subject: value('subject'), prompt: value('prompt'),
    target_new: value('target_new')};
  if (value('target_true').trim()) fact.target_true = value('target_true');
  if (value('question').trim()) fact.question = value('question');
  const paraphrases = value('paraphrase_prompts').split('\n').filter((p) => p.trim());
  if (paraphrases.length) fact.paraphrase_prompts = paraphrases;
  return fact;
}

function clearMarks() {
  for (const el of document.querySelectorAll('#fact-rows .invalid')) el.classList.remove('invalid');
  for (const el of document.querySelectorAll('#fact-rows .field-error')) el.textContent = '';
}

/** Put each problem next to its input ("facts[1].prompt" -> row 2, prompt). */
function markProblems(problems) {
  const all = rows();
  for (const problem of problems) {
    const match = /^facts\[(\d+)\]\.([a-z_]+)/.exec(problem.field || '');
    if (!match) continue;
    const row = all[Number(match[1])];
    if (!row) continue;
    const input = row.querySelector(`[name="${match[2]}"]`);
    const slot = row.querySelector(`.field-error[data-for="${match[2]}"]`);
    if (input) input.classList.add('invalid');
    if (slot && !slot.textContent) slot.textContent = problem.message;
  }
}

async function loadMethods() {
  const select = $('#method-select');
  select.replaceChildren(h('option', {value: '', text: 'service default'}));
  try {
    const schema = await api('/openapi.json');
    const method = schema.components.schemas.EditSubmit.properties.method;
    const options = (method.anyOf || [method]).flatMap((part) => part.enum || []);
    for (const name of options) select.append(h('option', {value: name, text: name}));
  } catch {
    // the schema is not reachable: the service default is still a valid choice
  }
}

async function submit(event) {
  event.preventDefault();
  const errors = $('#teach-errors');
  clearMarks();
  showError(errors, '');
  const facts = rows().map(readRow);
  const problems = checkFacts(facts);
  if (problems.length) {
    markProblems(problems);
    showError(errors, summary(problems));
    return;
  }
  const body = {facts};
  if ($('#method-select').value) body.method = $('#method-select').value;
  const button = $('#teach-submit');
  button.disabled = true;
  try {
    const accepted = await api('/edits', {method: 'POST', body});
    const list = $('#job-list');
    if (!list.querySelector('.job')) list.replaceChildren();
    followJob(list, accepted.job_id);
  } catch (exc) {
    if (exc instanceof ApiError) {
      markProblems(exc.errors);
      showError(errors, exc.status ? `${exc.detail} (HTTP ${exc.status})` : exc.detail);
    } else {
      showError(errors, String(exc));
    }
  } finally {
    button.disabled = false;
  }
}

function loadPasted() {
  const message = $('#paste-msg');
  try {
    const facts = parseFacts($('#paste-input').value);
    if (!facts.length) throw new Error('no facts found');
    $('#fact-rows').replaceChildren();
    facts.forEach((fact) => addRow(fact));
    message.textContent = `${facts.length} fact${facts.length === 1 ? '' : 's'} loaded; check them, then Teach.`;
    message.className = 'muted';
  } catch (exc) {
    message.textContent = exc.message;
    message.className = 'error';
  }
}

/** The latest jobs (e.g. submitted before a reload, or by a script); unfinished ones are
 * followed until they commit or fail. */
export async function showRecentJobs() {
  try {
    const jobs = await api('/edits', {query: {limit: RECENT_JOBS}});
    const list = $('#job-list');
    if (jobs.length && !list.querySelector('.job')) list.replaceChildren();
    for (const job of jobs.reverse()) followJob(list, job.job_id);  // newest ends on top
  } catch {
    // without read access there is nothing to show
  }
}

export function initTeach() {
  addRow();
  $('#add-row').addEventListener('click', () => addRow());
  $('#paste-load').addEventListener('click', loadPasted);
  $('#teach-form').addEventListener('submit', submit);
  loadMethods();
}
