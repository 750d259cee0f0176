// Pasted facts: JSON (a list of facts, or {"facts": [...]}) or CSV with a header row.

const COLUMNS = ['subject', 'prompt', 'target_new', 'target_true', 'paraphrase_prompts',
  'question'];
const ALIASES = {target: 'target_new', new_target: 'target_new', true_target: 'target_true',
  paraphrases: 'paraphrase_prompts'};

/** RFC 4180-style CSV: quoted fields, doubled quotes, commas and newlines inside quotes. */
export function parseCsv(text) {
  const rows = [];
  let row = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i += 1) {
    const char = text[i];
    if (quoted) {
      if (char === '"' && text[i + 1] === '"') {
        field += '"';
        i += 1;
      } else if (char === '"') quoted = false;
      else field += char;
    } else if (char === '"' && field === '') quoted = true;
    else if (char === ',') {
      row.push(field);
      field = '';
    } else if (char === '\n' || char === '\r') {
      if (char === '\r' && text[i + 1] === '\n') i += 1;
      row.push(field);
      field = '';
      if (row.some((cell) => cell.trim() !== '')) rows.push(row);
      row = [];
    } else field += char;
  }
  if (quoted) throw new Error('CSV: a quoted field is not closed');
  row.push(field);
  if (row.some((cell) => cell.trim() !== '')) rows.push(row);
  return rows;
}

function normalise(raw, index) {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new Error(`fact ${index + 1} is not an object`);
  }
  const fact = {};
  for (const [key, value] of Object.entries(raw)) {
    const name = ALIASES[key] || key;
    if (!COLUMNS.includes(name)) continue;
    if (name === 'paraphrase_prompts') {
      fact[name] = Array.isArray(value) ? value.map(String)
        : String(value || '').split('|').map((p) => p.trim()).filter(Boolean);
    } else if (value !== null && value !== undefined) {
      fact[name] = String(value);
    }
  }
  return fact;
}

function fromCsv(text) {
  const rows = parseCsv(text);
  if (rows.length < 2) throw new Error('CSV: a header row and at least one fact are needed');
  const header = rows[0].map((cell) => ALIASES[cell.trim()] || cell.trim());
  const unknown = header.filter((name) => !COLUMNS.includes(name));
  if (unknown.length) {
    throw new Error(`CSV: unknown column(s) ${unknown.join(', ')}; use ${COLUMNS.join(', ')}`);
  }
  if (!header.includes('subject') || !header.includes('prompt') || !header.includes('target_new')) {
    throw new Error('CSV: the header needs subject, prompt and target_new');
  }
  return rows.slice(1).map((cells, i) => normalise(
    Object.fromEntries(header.map((name, j) => [name, (cells[j] ?? '').trim()])
      .filter(([, value]) => value !== '')), i));
}

/** Facts from pasted text; throws an Error whose message says what is wrong. */
export function parseFacts(text) {
  const trimmed = text.trim();
  if (!trimmed) throw new Error('nothing pasted');
  if (trimmed.startsWith('[') || trimmed.startsWith('{')) {
    let data;
    try {
      data = JSON.parse(trimmed);
    } catch (exc) {
      throw new Error(`JSON: ${exc.message}`);
    }
    const list = Array.isArray(data) ? data : Array.isArray(data.facts) ? data.facts : [data];
    return list.map(normalise);
  }
  return fromCsv(trimmed);
}
