// Playground: one prompt, two versions side by side (default: the active one and its parent):
// candidate scores (POST /score), the top-10 next tokens (POST /next-tokens) and the greedy
// continuation (POST /generate), each asked of its version with the `version` field.

import {api} from './api.js';
import {hBars, PALETTE} from './charts.js';
import {$, fmt, h, showError} from './dom.js';
import {fillVersionSelect, loadVersions} from './lineage.js';

function candidates() {
  return $('#play-candidates').value.split(',').map((c) => c.trim()).filter(Boolean);
}

/** Tokens shown with their spaces visible: " English" -> "␣English". */
function visible(token) {
  return token.replace(/ /g, '␣').replace(/\n/g, '⏎');
}

async function ask(version, prompt, cands) {
  const out = {version};
  if (cands.length) {
    out.score = await api('/score', {method: 'POST', body: {prompt, candidates: cands, version}});
  }
  out.top = await api('/next-tokens', {method: 'POST', body: {prompt, k: 10, version}});
  out.generated = await api('/generate', {method: 'POST', body: {prompt, max_new_tokens: 16, version}});
  return out;
}

function column(el, result, color, scale) {
  const parts = [h('h3', {text: `Version ${result.version}`})];
  if (result.score) {
    parts.push(hBars({title: 'Candidate log-probability', color, min: scale.lo, max: scale.hi,
      rows: result.score.scores.map((s) => ({label: s.candidate, value: s.logprob,
        shown: `${fmt(s.logprob, 2)} (p ${fmt(Math.exp(s.logprob), 3)})`}))}));
  }
  const top = result.top.tokens;
  parts.push(hBars({title: 'Top-10 next tokens (probability)', color, min: 0,
    max: Math.max(...top.map((t) => t.prob), 1e-9),
    rows: top.map((t) => ({label: visible(t.token), value: t.prob, shown: fmt(t.prob, 3)}))}));
  parts.push(h('h3', {text: 'Generated'}),
    h('div', {class: 'generated'}, h('span', {class: 'muted', text: $('#play-prompt').value}),
      h('strong', {text: result.generated.text})));
  el.replaceChildren(...parts);
}

function diffTable(a, b) {
  if (!a.score || !b.score) return null;
  const rows = a.score.scores.map((sa, i) => {
    const sb = b.score.scores[i];
    const change = sa.logprob - sb.logprob;
    return h('tr', {dataset: {candidate: sa.candidate}},
      h('td', {text: sa.candidate}),
      h('td', {class: 'num', text: fmt(sb.logprob, 3)}),
      h('td', {class: 'num', text: fmt(sa.logprob, 3)}),
      h('td', {class: `num ${change > 0 ? 'delta-up' : change < 0 ? 'delta-down' : ''}`,
        dataset: {change: String(change)}, text: `${change > 0 ? '+' : ''}${fmt(change, 3)}`}));
  });
  return h('table', {class: 'table score-diff'},
    h('thead', {}, h('tr', {}, h('th', {text: 'Candidate'}), h('th', {text: `log p on ${b.version}`}),
      h('th', {text: `log p on ${a.version}`}), h('th', {text: `change (${a.version} − ${b.version})`}))),
    h('tbody', {}, rows));
}

async function compare(event) {
  if (event) event.preventDefault();
  const errors = $('#play-errors');
  showError(errors, '');
  const prompt = $('#play-prompt').value;
  if (!prompt.trim()) {
    showError(errors, 'prompt: must not be empty or blank');
    return;
  }
  const cands = candidates();
  const va = $('#play-a').value;
  const vb = $('#play-b').value;
  const button = $('#play-form button[type=submit]');
  button.disabled = true;
  $('#play-diff').replaceChildren(h('p', {class: 'muted', text: 'Asking both versions…'}));
  try {
    // One version after the other: a version other than the active one is served exclusively.
    const a = await ask(va, prompt, cands);
    const b = await ask(vb, prompt, cands);
    const all = [...(a.score?.scores || []), ...(b.score?.scores || [])].map((s) => s.logprob);
    const scale = {lo: Math.min(...all, 0) - 1, hi: Math.max(...all, -1e-9)};
    column($('#play-col-a'), a, PALETTE[0], scale);
    column($('#play-col-b'), b, PALETTE[1], scale);
    const diff = diffTable(a, b);
    $('#play-diff').replaceChildren(...(diff ? [h('h3', {text: 'Score change'}), diff] : []));
  } catch (exc) {
    $('#play-diff').replaceChildren();
    showError(errors, `${exc.detail || exc.message}${exc.status ? ` (HTTP ${exc.status})` : ''}`);
  } finally {
    button.disabled = false;
  }
}

export function initPlayground() {
  $('#play-form').addEventListener('submit', compare);
}

/** Fill the version choices (default: active and its parent) and, if empty, the prompt. */
export async function show() {
  try {
    const list = await loadVersions();
    const active = list.versions.find((v) => v.id === list.active);
    fillVersionSelect($('#play-a'), list, $('#play-a').dataset.touched ? $('#play-a').value : list.active);
    fillVersionSelect($('#play-b'), list, $('#play-b').dataset.touched ? $('#play-b').value
      : (active && active.parent) || list.active);
    for (const id of ['#play-a', '#play-b']) {
      $(id).addEventListener('change', () => { $(id).dataset.touched = '1'; }, {once: true});
    }
    if (!$('#play-prompt').value && active && active.n_facts) {
      const detail = await api(`/versions/${encodeURIComponent(active.id)}`);
      const fact = detail.facts[0];
      $('#play-prompt').value = fact.prompt.replace('{}', fact.subject);
      $('#play-candidates').value = [fact.target_new, fact.target_true].filter(Boolean).join(', ');
    }
  } catch (exc) {
    showError($('#play-errors'), exc.message);
  }
}
