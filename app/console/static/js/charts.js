// Inline SVG charts drawn from data (no library): grouped bars and a line with points.

import {fmt, s} from './dom.js';

export const PALETTE = ['#2457c5', '#d07a12', '#2f9e6b', '#8a4fc1', '#b3261e'];

function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

function frame(width, height, title) {
  return s('svg', {class: 'chart', width, height, viewBox: `0 0 ${width} ${height}`,
    role: 'img', 'aria-label': title}, s('title', {}, title),
  s('text', {class: 'title', x: 8, y: 16}, title));
}

function yAxis(svg, {left, top, bottom, right, max, digits}) {
  for (let i = 0; i <= 4; i += 1) {
    const value = (max * i) / 4;
    const y = bottom - ((bottom - top) * i) / 4;
    svg.append(s('line', {class: i ? 'grid' : 'axis', x1: left, x2: right, y1: y, y2: y}));
    svg.append(s('text', {x: left - 4, y: y + 4, 'text-anchor': 'end'}, fmt(value, digits)));
  }
}

/**
 * Grouped bars: labels along x, one bar per series in each group.
 * series: [{name, values: [number|null]}]; max: y-axis top (default: from the data).
 */
export function barChart({title, labels, series, max, digits = 1, width = 520, height = 220}) {
  const svg = frame(width, height, title);
  const left = 44;
  const right = width - 10;
  const top = 28;
  const bottom = height - (series.length > 1 ? 44 : 26);
  const values = series.flatMap((serie) => serie.values).filter((v) => typeof v === 'number');
  const top_ = max ?? niceMax(Math.max(0, ...values));
  yAxis(svg, {left, top, bottom, right, max: top_, digits});
  const group = (right - left) / Math.max(1, labels.length);
  const barWidth = Math.max(3, Math.min(26, (group * 0.8) / series.length));
  labels.forEach((label, i) => {
    const start = left + group * i + (group - barWidth * series.length) / 2;
    series.forEach((serie, j) => {
      const value = serie.values[i];
      if (typeof value !== 'number') return;
      const heightPx = ((bottom - top) * Math.min(value, top_)) / top_;
      svg.append(s('rect', {x: start + j * barWidth, y: bottom - heightPx, width: barWidth - 1,
        height: Math.max(0, heightPx), fill: PALETTE[j % PALETTE.length]},
      s('title', {}, `${label} · ${serie.name}: ${fmt(value, 3)}`)));
    });
    svg.append(s('text', {x: left + group * i + group / 2, y: bottom + 14,
      'text-anchor': 'middle'}, label));
  });
  if (series.length > 1) {
    let x = left;
    series.forEach((serie, j) => {
      svg.append(s('rect', {x, y: height - 16, width: 10, height: 10,
        fill: PALETTE[j % PALETTE.length]}));
      svg.append(s('text', {x: x + 14, y: height - 7}, serie.name));
      x += 22 + serie.name.length * 6.5;
    });
  }
  return svg;
}

/** A line through points (labels along x), e.g. the residual ratio after each layer. */
export function lineChart({title, labels, values, max, digits = 2, width = 420, height = 210}) {
  const svg = frame(width, height, title);
  const left = 40;
  const right = width - 14;
  const top = 40;
  const bottom = height - 26;
  const top_ = max ?? niceMax(Math.max(0, ...values.filter((v) => typeof v === 'number')));
  yAxis(svg, {left, top, bottom, right, max: top_, digits});
  const step = labels.length > 1 ? (right - left - 20) / (labels.length - 1) : 0;
  const points = values.map((value, i) => [left + 10 + step * i,
    bottom - ((bottom - top) * Math.min(value ?? 0, top_)) / top_]);
  if (points.length > 1) {
    svg.append(s('polyline', {points: points.map((p) => p.join(',')).join(' '), fill: 'none',
      stroke: PALETTE[0], 'stroke-width': 2}));
  }
  points.forEach(([x, y], i) => {
    svg.append(s('circle', {cx: x, cy: y, r: 3.5, fill: PALETTE[0]},
      s('title', {}, `${labels[i]}: ${fmt(values[i], 3)}`)));
    svg.append(s('text', {x, y: bottom + 14, 'text-anchor': 'middle'}, labels[i]));
    svg.append(s('text', {x, y: y - 7, 'text-anchor': 'middle'}, fmt(values[i], 2)));
  });
  return svg;
}

/** Horizontal bars with a label and a value each (candidate scores, next-token probabilities). */
export function hBars({title, rows, max, min = 0, digits = 3, width = 460, color = PALETTE[0]}) {
  const rowHeight = 22;
  const height = 28 + rows.length * rowHeight + 6;
  const svg = frame(width, height, title);
  const labelWidth = 150;
  const valueWidth = 70;
  const span = (max - min) || 1;
  rows.forEach((row, i) => {
    const y = 28 + i * rowHeight;
    const barMax = width - labelWidth - valueWidth - 10;
    const length = Math.max(1, (barMax * (row.value - min)) / span);
    const label = row.label.length > 22 ? `${row.label.slice(0, 21)}…` : row.label;
    svg.append(s('text', {x: labelWidth - 6, y: y + 14, 'text-anchor': 'end',
      class: 'token-text'}, label, s('title', {}, row.label)));
    svg.append(s('rect', {x: labelWidth, y: y + 3, width: length, height: rowHeight - 7,
      fill: row.color || color, rx: 2}));
    svg.append(s('text', {x: labelWidth + length + 5, y: y + 14}, row.shown ?? fmt(row.value, digits)));
  });
  return svg;
}
