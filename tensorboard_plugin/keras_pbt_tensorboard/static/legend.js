// The legend above the family tree, and where a metric falls on its colour
// ramp (0 worst, 1 best, whatever the mode).

import {colour, el, fmt, svg, truncate} from './dom.js';

export function drawLegend(container, m) {
  const bar = svg('svg', {width: 160, height: 12, class: 'ramp'});
  for (let i = 0; i < 32; i++) {
    const t = m.mode === 'min' ? 1 - i / 31 : i / 31;
    bar.append(svg('rect', {x: i * 5, y: 0, width: 5, height: 12, fill: colour(t)}));
  }
  const lo = Number.isFinite(m.metricLo) ? fmt(m.metricLo) : '?';
  const hi = Number.isFinite(m.metricHi) ? fmt(m.metricHi) : '?';
  container.replaceChildren(
    el('span', {}, `${m.monitor}: ${lo} `), bar, el('span', {}, ` ${hi}`),
    el('span', {class: 'key-arrow'}, '  \u2192 exploit (parent \u2192 child)'),
    el('span', {class: 'key-best'}, '  \u2501 ancestry of the best member' +
      (m.best === null ? '' : ` (${truncate(m.best, 40)})`)));
}

export function metricT(m, v) {
  if (!Number.isFinite(v)) return NaN;
  const t = m.metricHi > m.metricLo ? (v - m.metricLo) / (m.metricHi - m.metricLo) : 1;
  return m.mode === 'min' ? 1 - t : t;
}
