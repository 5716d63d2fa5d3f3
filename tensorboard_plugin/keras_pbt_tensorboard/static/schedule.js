// The schedule PBT found: one chart per hyperparameter, every member in grey
// and the best member's ancestry highlighted (computed by the server).

import {el, fmt, num, svg, truncate} from './dom.js';

export function drawSchedule(container, m) {
  const charts = [];
  const width = Math.max(600, container.clientWidth || 900);
  const left = 150;
  const right = 24;
  const h = 150;
  const info = m.bestInfo;
  // The highlighted schedule counts the steps the best member's weights
  // received (its `end_step` can pass the last member step in an
  // asynchronous run).
  const span = Math.max(1, m.maxStep, info ? info.end_step : 0);
  const x = (s) => left + (Math.max(0, s) / span) * (width - left - right);
  const best = info ? info.schedule : {};
  for (const name of m.hparamNames) {
    const values = m.records.map((r) => (r.hparams || {})[name]).filter((v) => v !== undefined);
    const numeric = values.every((v) => typeof v === 'number' && Number.isFinite(v));
    let y;
    let ticks;
    if (numeric && values.length) {
      let lo = Math.min(...values);
      let hi = Math.max(...values);
      const log = lo > 0 && hi / lo > 20;
      const f = log ? Math.log10 : (v) => v;
      if (hi === lo) {
        hi += Math.abs(hi) * 0.1 || 1;
        lo -= Math.abs(lo) * 0.1 || 1;
      }
      const [a, b] = [f(lo), f(hi)];
      y = (v) => 10 + (1 - (f(v) - a) / (b - a)) * (h - 30);
      ticks = [lo, log ? Math.pow(10, (a + b) / 2) : (lo + hi) / 2, hi];
    } else {
      const cats = [...new Set(values.map((v) => fmt(v)))].sort();
      const pos = new Map(cats.map((c, i) => [c, i]));
      y = (v) => 10 + ((pos.get(fmt(v)) + 0.5) / Math.max(1, cats.length)) * (h - 30);
      ticks = cats;
    }
    const chart = svg('svg', {class: 'hp-chart', width, height: h, 'data-hparam': name});
    const axis = svg('g', {class: 'axis'});
    for (const t of ticks) {
      axis.append(svg('line', {x1: left - 4, x2: width - right, y1: y(t), y2: y(t)}));
      axis.append(svg('text', {x: left - 8, y: y(t), 'text-anchor': 'end',
        'dominant-baseline': 'central'}, truncate(fmt(t), 14)));
    }
    axis.append(svg('text', {x: 4, y: 14, class: 'hp-name'}, truncate(name, 20)));
    axis.append(svg('text', {x: width - right, y: h - 4, 'text-anchor': 'end'}, `step ${span}`));
    axis.append(svg('text', {x: left, y: h - 4}, '0'));
    chart.append(axis);
    const stepPath = (points, end) => {
      let d = '';
      points.forEach(([s, v], i) => {
        const next = i + 1 < points.length ? points[i + 1][0] : end;
        const yy = y(v).toFixed(1);
        d += `${i ? 'L' : 'M'}${x(s).toFixed(1)},${yy}H${x(next).toFixed(1)}`;
      });
      return d;
    };
    const others = svg('g', {class: 'members'});
    for (const k of m.members) {
      const recs = m.byMember.get(k).filter((r) => (r.hparams || {})[name] !== undefined);
      if (!recs.length) continue;
      const points = recs.map((r) => [r.step, r.hparams[name]]);
      const p = svg('path', {d: stepPath(points, recs[recs.length - 1].step), class: 'member-line',
        'data-member': k});
      p.append(svg('title', {}, `member ${k}`));
      others.append(p);
    }
    chart.append(others);
    if (best[name] && best[name].length) {
      chart.append(svg('path', {d: stepPath(best[name], info.end_step), class: 'best-line',
        'data-member': m.best}));
    }
    charts.push(chart);
  }
  const summary = el('details', {class: 'best-schedule'},
    el('summary', {}, info === null ? 'No best member yet.' :
      `Schedule of the best final member ${m.best} ` +
      `(${m.monitor} ${fmt(num(info.metric))}), as [step, value] pairs`),
    el('pre', {}, JSON.stringify(best, null, 1)));
  container.replaceChildren(
    el('p', {class: 'hint'}, 'Grey: every member. Highlighted: the hyperparameters the best ' +
      'final member actually trained with, through the members it copied.'),
    ...charts, summary);
}
