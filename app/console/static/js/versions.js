// Versions: the lineage as a timeline, one version's facts, per-layer deltas, diagnostics and
// evaluation, and the actions (roll back/forward, revert, evaluate, export) behind a
// confirmation dialog that says what will happen.

import {api, ApiError, download} from './api.js';
import {barChart, lineChart} from './charts.js';
import {confirmAction} from './confirm.js';
import {$, fmt, h, showError, when} from './dom.js';
import {followJob} from './jobs.js';
import {lineageOf, loadVersions} from './lineage.js';
import {applyScopes, mutating} from './session.js';

let selected = null;
let list = null;
const details = new Map();

function plural(n, word) {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** A held version (kept inactive by the quality gate) has usable weights like a committed one. */
function usable(version) {
  return version.state === 'committed' || version.state === 'held';
}

function stateBadge(version) {
  return h('span', {class: `badge ${version.state === 'committed' ? 'ok' : 'bad'}`,
    text: version.state});
}

function renderTimeline() {
  const timeline = $('#timeline');
  timeline.replaceChildren();
  for (const version of list.versions) {
    const classes = [version.active ? 'is-active' : '', version.state === 'failed' ? 'is-failed' : '',
      version.id === selected ? 'selected' : ''].filter(Boolean).join(' ');
    const sub = version.kind === 'base' ? 'base model'
      : `${version.kind} of ${plural(version.n_facts, 'fact')} on ${version.parent}`
        + (version.method ? ` · ${version.method}` : '');
    timeline.append(h('li', {class: classes, dataset: {version: version.id}},
      h('button', {type: 'button', onclick: () => { location.hash = `#versions/${version.id}`; }},
        h('span', {class: 'vline'}, h('span', {class: 'vid', text: version.id}),
          version.active ? h('span', {class: 'badge active', text: 'active'}) : null,
          stateBadge(version)),
        h('span', {class: 'sub', text: sub}),
        h('span', {class: 'sub', text: when(version.created_at)}))));
  }
}

async function detailOf(id, fresh = false) {
  if (fresh || !details.has(id)) details.set(id, await api(`/versions/${encodeURIComponent(id)}`));
  return details.get(id);
}

function kv(pairs) {
  return h('dl', {class: 'kv'}, pairs.filter(([, v]) => v !== null && v !== undefined && v !== '')
    .flatMap(([k, v]) => [h('dt', {text: k}), h('dd', {}, v)]));
}

function factsTable(facts) {
  if (!facts.length) return h('p', {class: 'muted', text: 'No facts of its own.'});
  return h('table', {class: 'table facts'},
    h('thead', {}, h('tr', {}, ['Subject', 'Prompt', 'New target', 'True target', 'Paraphrases']
      .map((t) => h('th', {text: t})))),
    h('tbody', {}, facts.map((f) => h('tr', {},
      h('td', {text: f.subject}), h('td', {text: f.prompt}), h('td', {text: f.target_new}),
      h('td', {text: f.target_true ?? '—'}),
      h('td', {text: (f.paraphrase_prompts || []).join(' · ') || '—'})))));
}

function layersSection(detail) {
  const stats = detail.layer_stats || [];
  if (!stats.length) return null;
  return [h('h3', {text: 'Per-layer delta'}),
    h('table', {class: 'table layers'},
      h('thead', {}, h('tr', {}, ['Layer', 'Norm ‖Δ‖', 'Rank', 'Stored'].map((t) => h('th', {text: t})))),
      h('tbody', {}, stats.map((row) => h('tr', {},
        h('td', {class: 'num', text: row.layer}), h('td', {class: 'num', text: fmt(row.norm, 4)}),
        h('td', {class: 'num', text: row.rank}),
        h('td', {text: row.factored ? 'factored' : 'dense'})))))];
}

function diagnosticsSection(detail) {
  const diag = detail.diagnostics || {};
  const out = [];
  const ratios = diag.residual_ratio;
  const layers = diag.layers || [];
  if (Array.isArray(ratios) && ratios.length) {
    const labels = ratios.map((_, i) => (i === 0 ? 'start' : `L${layers[i - 1] ?? i}`));
    out.push(h('h3', {text: 'Diagnostics'}),
      h('div', {class: 'charts'}, lineChart({
        title: 'Residual ratio at the last edited layer, after each layer', labels,
        values: ratios, max: Math.max(1, ...ratios)})));
  }
  const extra = [];
  if (Array.isArray(diag.z_loss)) extra.push(['final z loss', diag.z_loss.map((x) => fmt(x, 3)).join(', ')]);
  if (Array.isArray(diag.already_predicted)) {
    extra.push(['already predicted', diag.already_predicted.length
      ? diag.already_predicted.join(', ') : 'none']);
  }
  if (detail.weights_sha256) extra.push(['weights sha256', h('span', {class: 'mono', text: detail.weights_sha256.slice(0, 16) + '…'})]);
  const timings = detail.timings || {};
  const timed = Object.entries(timings).filter(([, v]) => typeof v === 'number');
  if (timed.length) extra.push(['timings', timed.map(([k, v]) => `${k} ${fmt(v, 2)} s`).join(' · ')]);
  if (extra.length) {
    if (!out.length) out.push(h('h3', {text: 'Diagnostics'}));
    out.push(kv(extra));
  }
  return out;
}

function evaluationSection(detail) {
  const evaluation = detail.evaluation;
  if (!evaluation) return [h('h3', {text: 'Evaluation'}), h('p', {class: 'muted', text: 'Not evaluated yet.'})];
  const keys = Object.entries(evaluation).filter(([, v]) => typeof v === 'number');
  return [h('h3', {text: `Evaluation against ${evaluation.reference ?? 'its parent'}`}),
    h('table', {class: 'table evaluation'}, h('tbody', {}, keys.map(([k, v]) => h('tr', {},
      h('td', {text: k}), h('td', {class: 'num', text: fmt(v, k === 'kl' ? 5 : 2)})))))];
}

async function runAction(detail, action) {
  const pane = $('#version-detail');
  const errors = pane.querySelector('.errors');
  showError(errors, '');
  const ok = await confirmAction(action.confirm);
  if (!ok) return;
  try {
    await action.run();
  } catch (exc) {
    showError(errors, exc instanceof ApiError ? `${exc.detail} (HTTP ${exc.status})` : String(exc));
  }
}

function actionsFor(detail) {
  const active = list.active;
  const activeLineage = lineageOf(list, active);
  const buttons = [];
  const jobs = h('div', {class: 'jobs'});
  if (detail.id !== active && usable(detail)) {
    const back = activeLineage.includes(detail.id);
    const verb = back ? 'Roll back' : 'Roll forward';
    buttons.push({label: `${verb} to ${detail.id}`, confirm: {
      title: `${verb} to ${detail.id}?`,
      body: `${detail.id} becomes the active version: every query that names no version is `
        + `answered with its exact weights (the base plus the deltas of `
        + `${lineageOf(list, detail.id).join(' → ')}). Nothing is deleted; ${active} stays `
        + 'in the list and you can make it active again.',
      ok: `${verb} to ${detail.id}`},
    run: async () => {
      await api(`/versions/${encodeURIComponent(detail.id)}/rollback`, {method: 'POST'});
      await show(detail.id);
    }});
  }
  if (detail.kind !== 'base' && activeLineage.includes(detail.id)) {
    const later = activeLineage.slice(activeLineage.indexOf(detail.id) + 1);
    buttons.push({label: 'Revert this batch', danger: true, confirm: {
      title: `Revert ${detail.id}'s batch?`,
      body: `Queues a job that drops the ${plural(detail.n_facts, 'fact')} taught by ${detail.id} `
        + (later.length ? `and recomputes the later batches (${later.join(', ')}) on top of `
          + `${detail.parent} as new versions; the last one becomes active.`
          : `and makes ${detail.parent}'s weights active again as a new version.`)
        + ' Versions are never deleted: you can roll back to any of them.',
      ok: 'Queue the revert', danger: true},
    run: async () => {
      const job = await api(`/versions/${encodeURIComponent(detail.id)}/revert`, {method: 'POST'});
      followJob(jobs, job.job_id, {onDone: (done) => show(done.version || detail.id)});
    }});
  }
  if (usable(detail) && detail.facts.length) {
    buttons.push({label: 'Evaluate', scope: 'edit', confirm: {
      title: `Evaluate ${detail.id}?`,
      body: `Queues an evaluation of ${detail.id} on its own ${plural(detail.facts.length, 'fact')} `
        + `against ${detail.parent ?? 'itself'} (efficacy, generalization, specificity, KL). It runs `
        + 'in the worker after any queued edits; the figures are stored with the version and '
        + 'replace an earlier evaluation.',
      ok: 'Queue the evaluation'},
    run: async () => {
      const job = await api(`/versions/${encodeURIComponent(detail.id)}/evaluate`, {method: 'POST'});
      followJob(jobs, job.job_id, {onDone: () => show(detail.id, true)});
    }});
  }
  // A real link (copy it for curl); clicking asks first, then downloads with the token header.
  const exportPath = `/versions/${encodeURIComponent(detail.id)}/export`;
  const exportLink = h('a', {class: 'button', href: exportPath, download: `${detail.id}.tar`,
    text: 'Export checkpoint'});
  exportLink.addEventListener('click', (event) => {
    event.preventDefault();
    runAction(detail, {confirm: {
      title: `Export ${detail.id}?`,
      body: `The server merges ${detail.id}'s weights into a Hugging Face checkpoint (config, `
        + `safetensors, tokenizer) and your browser downloads it as ${detail.id}.tar, about the `
        + 'size of the model. The first export of a version takes a moment; it is cached.',
      ok: 'Download'},
    run: async () => {
      const blob = await download(exportPath);
      const url = URL.createObjectURL(blob);
      const a = h('a', {href: url, download: `${detail.id}.tar`});
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    }});
  });
  const row = h('div', {class: 'actions'}, buttons.map((action) => mutating(h('button', {
    type: 'button', class: action.danger ? 'danger' : '', text: action.label,
    onclick: () => runAction(detail, action)}), action.scope || 'admin')));
  if (usable(detail)) row.append(mutating(exportLink, 'admin'));
  return [row, jobs];
}

function renderDetail(detail) {
  const pane = $('#version-detail');
  const title = h('h2', {}, `${detail.id} `,
    detail.active ? h('span', {class: 'badge active', text: 'active'}) : null, ' ',
    stateBadge(detail));
  const info = kv([
    ['kind', detail.kind],
    ['parent', detail.parent ? h('a', {href: `#versions/${detail.parent}`, text: detail.parent}) : null],
    ['lineage', lineageOf(list, detail.id).join(' → ')],
    ['method', detail.method],
    ['facts', String(detail.n_facts)],
    ['created', when(detail.created_at)],
    ['job', detail.job_id ? h('span', {class: 'mono', text: detail.job_id}) : null],
    ['source', detail.source ? Object.entries(detail.source).map(([k, v]) => `${k} ${v}`).join(', ') : null],
    ['error', detail.error],
  ]);
  pane.replaceChildren(title, info, ...actionsFor(detail),
    h('div', {class: 'errors', role: 'alert', hidden: true}),
    h('h3', {text: 'Facts'}), factsTable(detail.facts || []),
    ...(layersSection(detail) || []), ...diagnosticsSection(detail), ...evaluationSection(detail));
}

async function renderEvalCharts() {
  const box = $('#eval-charts');
  const recent = list.versions.filter((v) => v.kind !== 'base').slice(-30);
  const all = await Promise.all(recent.map((v) => detailOf(v.id).catch(() => null)));
  const evaluated = all.filter((d) => d && d.evaluation);
  if (!evaluated.length) {
    box.replaceChildren(h('p', {class: 'muted', text: 'No version has an evaluation yet.'}));
    return;
  }
  const labels = evaluated.map((d) => d.id);
  const pick = (d, ...keys) => {
    for (const key of keys) if (typeof d.evaluation[key] === 'number') return d.evaluation[key];
    return null;
  };
  box.replaceChildren(
    barChart({title: 'Efficacy / generalization / specificity (%)', labels, max: 100, digits: 0,
      series: [
        {name: 'efficacy', values: evaluated.map((d) => pick(d, 'efficacy_success', 'zsre_efficacy'))},
        {name: 'generalization', values: evaluated.map((d) => pick(d, 'generalization_success', 'zsre_generalization'))},
        {name: 'specificity', values: evaluated.map((d) => pick(d, 'specificity_success', 'zsre_specificity'))},
      ]}),
    barChart({title: 'Neighbourhood KL (nats)', labels, digits: 3, width: 340,
      series: [{name: 'KL', values: evaluated.map((d) => pick(d, 'kl'))}]}));
}

/** Show the page; `id` selects a version (default: the active one). */
export async function show(id, fresh = false) {
  const errors = $('#versions-errors');
  showError(errors, '');
  try {
    list = await loadVersions();
    selected = id && list.versions.some((v) => v.id === id) ? id : list.active;
    renderTimeline();
    const detail = await detailOf(selected, true);
    renderDetail(detail);
    if (fresh) details.clear();
    await renderEvalCharts();
  } catch (exc) {
    showError(errors, exc.message);
  }
  applyScopes($('#page-versions'));
}
