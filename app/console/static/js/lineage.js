// The version list (GET /versions) shared by the pages, plus lineage helpers.

import {api} from './api.js';

let cached = null;

/** {active, versions} from the API (fresh each call; pages call it when shown). */
export async function loadVersions() {
  cached = await api('/versions');
  return cached;
}

export function lastVersions() {
  return cached;
}

/** The ids from the base to `id`, following parents. */
export function lineageOf(list, id) {
  const byId = new Map(list.versions.map((v) => [v.id, v]));
  const out = [];
  let current = byId.get(id);
  const seen = new Set();
  while (current && !seen.has(current.id)) {
    seen.add(current.id);
    out.unshift(current.id);
    current = current.parent ? byId.get(current.parent) : null;
  }
  return out;
}

/** Fill a <select> with the committed versions (newest first), keeping `selected`. */
export function fillVersionSelect(select, list, selected) {
  select.replaceChildren();
  for (const version of [...list.versions].reverse()) {
    if (version.state !== 'committed' && version.state !== 'held') continue;
    const label = `${version.id}${version.active ? ' (active)' : ''} · ${version.kind}`
      + (version.n_facts ? ` · ${version.n_facts} fact${version.n_facts === 1 ? '' : 's'}` : '');
    const option = document.createElement('option');
    option.value = version.id;
    option.textContent = label;
    select.append(option);
  }
  if (selected && [...select.options].some((o) => o.value === selected)) select.value = selected;
}
