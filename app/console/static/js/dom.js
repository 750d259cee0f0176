// DOM helpers. Everything a user or the model wrote goes in as text (textContent / text
// nodes), never as HTML: a fact whose target is "<img src=x onerror=alert(1)>" shows literally.

const SVG_NS = 'http://www.w3.org/2000/svg';

function assign(el, props) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.setAttribute('class', value);
    else if (key === 'text') el.textContent = String(value);
    else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** An HTML element: h('td', {class: 'num'}, 'text', otherNode). */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  assign(el, props);
  append(el, children);
  return el;
}

/** An SVG element (same conventions as h). */
export function s(tag, props = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  assign(el, props);
  append(el, children);
  return el;
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

/** Show an error box with a message (or hide it when message is empty). */
export function showError(box, message) {
  box.textContent = message || '';
  box.hidden = !message;
}

export function fmt(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return '—';
  if (typeof value !== 'number') return String(value);
  if (Number.isInteger(value)) return String(value);
  return value.toFixed(digits);
}

/** "2026-01-05T10:02:11.120Z" -> a short local time. */
export function when(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return date.toLocaleString([], {dateStyle: 'short', timeStyle: 'medium'});
}
