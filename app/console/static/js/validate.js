// Client-side checks that mirror the API's own (app/api/schemas/edits.py Fact): same rules, same
// messages, same field names, so the form says before submitting what the API would answer.

export const MAX_TEXT = 2000;
export const MAX_PROMPTS = 50;
export const MAX_FACTS = 1000;

// Python's categories Cc (C0, DEL, C1) and Cs (lone surrogates: with /u, a valid pair is one
// code point and does not match).
const CONTROL = /[\u0000-\u001f\u007f-\u009f\ud800-\udfff]/u;

/** Python's repr() of one control character, as the API's message shows it: '\x07'. */
function pyRepr(char) {
  const named = {'\t': '\\t', '\n': '\\n', '\r': '\\r'};
  if (named[char]) return `'${named[char]}'`;
  const code = char.charCodeAt(0);
  const hex = code.toString(16).padStart(code < 0x100 ? 2 : 4, '0');
  return `'\\${code < 0x100 ? 'x' : 'u'}${hex}'`;
}

/** The message for one text field, or null when it is fine. */
export function checkText(value, {required = true} = {}) {
  if (value === undefined || value === null) return required ? 'is required' : null;
  if (value === '') return 'String should have at least 1 character';
  if (typeof value !== 'string') return 'Input should be a valid string';
  if (!value.trim()) return 'must not be empty or blank';
  if (value.length > MAX_TEXT) return `String should have at most ${MAX_TEXT} characters`;
  const match = CONTROL.exec(value);
  if (match) {
    return `contains a control or invalid character ${pyRepr(match[0])} at position `
      + `${[...value.slice(0, match.index)].length}; remove it`;  // in code points, like Python
  }
  return null;
}

function countSlots(prompt) {
  return prompt.split('{}').length - 1;
}

/** Problems of one fact as [{field: 'facts[0].prompt', message}] (empty when valid). */
export function checkFact(fact, index) {
  const problems = [];
  const add = (name, message) => {
    if (message) problems.push({field: `facts[${index}].${name}`, message});
  };
  add('subject', checkText(fact.subject));
  if (!checkText(fact.subject) && fact.subject.includes('{}')) {
    add('subject', "must be the entity itself, not a template (remove '{}')");
  }
  const promptProblem = checkText(fact.prompt);
  add('prompt', promptProblem);
  if (!promptProblem) {
    const count = countSlots(fact.prompt);
    const rest = fact.prompt.split('{}').join('');
    if (count !== 1) {
      add('prompt', `must contain exactly one '{}' where the subject goes (found ${count}), `
        + "e.g. 'The mother tongue of {} is'");
    } else if (rest.includes('{') || rest.includes('}')) {
      add('prompt', "must not contain braces other than the one '{}' slot");
    }
  }
  add('target_new', checkText(fact.target_new));
  if (fact.target_true !== undefined) add('target_true', checkText(fact.target_true));
  if (fact.question !== undefined) add('question', checkText(fact.question));
  const paraphrases = fact.paraphrase_prompts || [];
  if (paraphrases.length > MAX_PROMPTS) {
    add('paraphrase_prompts', `List should have at most ${MAX_PROMPTS} items`);
  }
  paraphrases.forEach((text, i) => add(`paraphrase_prompts[${i}]`, checkText(text)));
  return problems;
}

/** Problems of a whole batch, in the API's order. */
export function checkFacts(facts) {
  if (!facts.length) return [{field: 'facts', message: 'add at least one fact'}];
  if (facts.length > MAX_FACTS) {
    return [{field: 'facts', message: `List should have at most ${MAX_FACTS} items`}];
  }
  return facts.flatMap((fact, i) => checkFact(fact, i));
}

/** "facts[0].prompt: must ..." like the API's detail line. */
export function summary(problems) {
  if (!problems.length) return '';
  const first = `${problems[0].field}: ${problems[0].message}`;
  return problems.length > 1 ? `${first} (and ${problems.length - 1} more)` : first;
}
