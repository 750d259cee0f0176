// A job card that follows GET /edits/{id} until the job is committed, failed or cancelled:
// state, stage, percent, an ETA for the current stage (from how fast its fraction moved) and,
// for a caller who may write, a Cancel button while the job is queued or running.

import {api} from './api.js';
import {fmt, h} from './dom.js';
import {callerName, canAdmin, canEdit} from './session.js';

const POLL_MS = 600;
const FINISHED = ['committed', 'failed', 'cancelled'];

function badgeClass(state) {
  if (state === 'committed') return 'badge ok';
  if (state === 'failed') return 'badge bad';
  if (state === 'cancelled') return 'badge muted';
  return 'badge warn';
}

/** Seconds left in the current stage, or null while there is too little to go on. */
export function stageEta(track, progress, now) {
  if (!progress) return null;
  if (track.stage !== progress.stage) {
    track.stage = progress.stage;
    track.since = now;
    track.startFraction = progress.fraction;
    return null;
  }
  const done = progress.fraction - track.startFraction;
  const elapsed = (now - track.since) / 1000;
  if (done <= 0.02 || elapsed < 1) return null;
  return (elapsed * (1 - progress.fraction)) / done;
}

/** "took 12.3 s" from the server's timestamps (queue time included), else from watching. */
function took(job, watched) {
  const seconds = (Date.parse(job.updated_at) - Date.parse(job.created_at)) / 1000;
  return `took ${fmt(Number.isFinite(seconds) ? seconds : watched, 1)} s`;
}

function describe(job) {
  if (job.kind === 'edit') return `edit of ${job.n_facts} fact${job.n_facts === 1 ? '' : 's'}`;
  return `${job.kind} of ${job.target || '?'}`;
}

/**
 * Render a card for jobId into container (prepended) and poll until the job finishes.
 * Resolves to the finished job body.
 */
export function followJob(container, jobId, {onDone} = {}) {
  const state = h('span', {class: 'badge', text: 'queued'});
  const title = h('span', {class: 'mono', text: jobId});
  const kind = h('span', {class: 'muted'});
  const stage = h('span', {class: 'stage'});
  const bar = h('progress', {max: '1', value: '0'});
  const percent = h('span', {class: 'mono'});
  const eta = h('span', {class: 'muted'});
  const result = h('div', {class: 'result'});
  // An edit token cancels its own jobs, an admin any: shown once the submitter is known.
  const cancel = h('button', {type: 'button', class: 'danger job-cancel', hidden: true,
    text: 'Cancel', title: 'queued: never runs; running: stops at its next step, commits nothing'});
  cancel.addEventListener('click', async () => {
    cancel.disabled = true;
    try {
      await api(`/edits/${encodeURIComponent(jobId)}/cancel`, {method: 'POST'});
    } catch (exc) {
      result.replaceChildren(h('span', {class: 'error', text: exc.message}));
      cancel.disabled = false;
    }
  });
  const card = h('div', {class: 'job', dataset: {jobId}},
    h('div', {class: 'job-head'}, state, kind, title, cancel),
    h('div', {class: 'job-head'}, stage, bar, percent, eta),
    result);
  container.prepend(card);
  const started = performance.now();
  const track = {stage: null, since: started, startFraction: 0};

  return new Promise((resolve) => {
    const tick = async () => {
      let job;
      try {
        job = await api(`/edits/${encodeURIComponent(jobId)}`);
      } catch (exc) {
        result.replaceChildren(h('span', {class: 'error', text: exc.message}));
        setTimeout(tick, POLL_MS * 3);
        return;
      }
      card.dataset.state = job.state;
      state.textContent = job.state;
      state.className = badgeClass(job.state);
      if (FINISHED.includes(job.state) || job.cancel_requested_by) cancel.remove();
      else cancel.hidden = !(canAdmin() || (canEdit() && job.submitter === callerName()));
      kind.textContent = describe(job);
      const now = performance.now();
      const progress = job.progress;
      if (job.state === 'committed') {
        bar.value = 1;
        percent.textContent = '100%';
        stage.textContent = 'done';
        eta.textContent = took(job, (now - started) / 1000);
      } else if (progress) {
        bar.value = progress.fraction;
        percent.textContent = `${Math.round(progress.fraction * 100)}%`;
        stage.textContent = progress.stage;
        const left = stageEta(track, progress, now);
        eta.textContent = left === null ? 'estimating…' : `stage ETA ~${Math.ceil(left)} s`;
      } else if (job.state !== 'cancelled') {
        stage.textContent = job.state === 'queued' ? 'waiting for the worker' : 'starting';
      }
      if (job.state === 'running' && job.cancel_requested_by) {
        stage.textContent = `stopping (cancelled by ${job.cancel_requested_by})`;
      }
      if (job.state === 'committed') {
        const link = job.version
          ? h('a', {href: `#versions/${encodeURIComponent(job.version)}`, text: job.version})
          : null;
        result.replaceChildren(job.kind === 'evaluate'
          ? h('span', {}, 'evaluation stored with ', link)
          : h('span', {}, 'committed as ', link));
      } else if (job.state === 'failed') {
        eta.textContent = took(job, (now - started) / 1000);
        result.replaceChildren(h('div', {class: 'error', text: `failed: ${job.error || 'no reason given'}`}));
      } else if (job.state === 'cancelled') {
        stage.textContent = 'cancelled';
        result.replaceChildren(h('div', {class: 'muted',
          text: `cancelled: ${job.error || `by ${job.cancel_requested_by || 'someone'}`}`}));
      }
      if (FINISHED.includes(job.state)) {
        document.dispatchEvent(new CustomEvent('modeledit:changed', {detail: job}));
        if (onDone) onDone(job);
        resolve(job);
        return;
      }
      setTimeout(tick, POLL_MS);
    };
    tick();
  });
}
