// The family tree: one lane per member, exploit arrows parent -> child, the
// best member's ancestry outlined, and the details of a hovered or pinned
// record.

import {BUCKETS, colour, el, fmt, niceTicks, svg, truncate} from './dom.js';
import {metricT} from './legend.js';

// The lane key of the member a record copied, or null.
function parentKey(r) {
  return r.parent === null || r.parent === undefined ? null : String(r.parent);
}

export class TreeView {
  constructor(wrap, details, tooltip) {
    this.wrap = wrap;
    this.details = details;
    this.tooltip = tooltip;
    this.model = null;
    this.pinned = null;
  }

  draw(model) {
    this.model = model;
    const m = model;
    const n = Math.max(1, m.members.length);
    const width = Math.max(600, this.wrap.clientWidth || 900);
    const left = 150;
    const right = 24;
    const top = 24;
    const laneH = Math.max(8, Math.min(28, Math.floor(640 / n)));
    const height = top + n * laneH + 8;
    const span = Math.max(1, m.maxStep);
    const x = (s) => left + (Math.max(0, s) / span) * (width - left - right);
    const y = (k) => top + m.lane.get(k) * laneH + laneH / 2;
    this.geom = {left, right, top, laneH, width, span, x, y};

    const root = svg('svg', {class: 'tree', width, height, role: 'img',
      'aria-label': `Family tree of ${m.members.length} members`});
    const defs = svg('defs');
    const marker = svg('marker', {id: 'arrowhead', viewBox: '0 0 10 10', refX: 9, refY: 5,
      markerWidth: 6, markerHeight: 6, orient: 'auto-start-reverse'});
    marker.append(svg('path', {d: 'M0,0 L10,5 L0,10 z', class: 'arrowhead'}));
    defs.append(marker);
    root.append(defs);

    // Step axis.
    const axis = svg('g', {class: 'axis'});
    for (const s of niceTicks(span, 6)) {
      axis.append(svg('line', {x1: x(s), x2: x(s), y1: top - 4, y2: height - 8}));
      axis.append(svg('text', {x: x(s), y: top - 8, 'text-anchor': 'middle'}, s));
    }
    axis.append(svg('text', {x: 4, y: top - 8}, 'step'));
    root.append(axis);

    // Lanes: background and label, one <g class="lane"> per member.
    const lanes = svg('g', {class: 'lanes'});
    m.members.forEach((k, i) => {
      const g = svg('g', {class: 'lane', 'data-member': k});
      g.append(svg('rect', {x: 0, y: top + i * laneH, width, height: laneH,
        class: i % 2 ? 'lane-bg odd' : 'lane-bg'}));
      if (laneH >= 8) {
        const label = svg('text', {x: left - 8, y: top + i * laneH + laneH / 2,
          'text-anchor': 'end', 'dominant-baseline': 'central', class: 'lane-label',
          'font-size': Math.min(12, laneH - 1)}, truncate(k, 22));
        label.append(svg('title', {}, k));
        g.append(label);
      }
      lanes.append(g);
    });
    root.append(lanes);

    // Segments, batched into one path per colour bucket (scales to 64
    // members x thousands of records without thousands of DOM nodes).
    const buckets = new Map();
    const dots = [];
    for (const k of m.members) {
      const recs = m.byMember.get(k);
      const yy = y(k).toFixed(1);
      for (let i = 0; i < recs.length; i++) {
        const r = recs[i];
        dots.push(`M${x(r.step).toFixed(1)},${yy}h0`);
        if (i === 0) continue;
        const t = metricT(m, r.metricValue);
        const b = Number.isFinite(t) ? Math.round(t * (BUCKETS - 1)) : -1;
        if (!buckets.has(b)) buckets.set(b, []);
        buckets.get(b).push(`M${x(recs[i - 1].step).toFixed(1)},${yy}H${x(r.step).toFixed(1)}`);
      }
    }
    const segs = svg('g', {class: 'segments'});
    for (const [b, parts] of buckets) {
      segs.append(svg('path', {d: parts.join(''), stroke: colour(b < 0 ? NaN : b / (BUCKETS - 1)),
        'stroke-width': Math.max(2, laneH * 0.55), class: 'segment'}));
    }
    root.append(segs);

    // Ancestry of the best member: an outline along its pieces.
    if (m.ancestry.length) {
      const d = m.ancestry.map((p) =>
        `M${x(p.from).toFixed(1)},${y(p.key).toFixed(1)}H${x(p.to).toFixed(1)}`).join('');
      root.append(svg('path', {d, class: 'ancestry', 'data-member': m.best,
        'stroke-width': Math.max(3, laneH * 0.8)}));
    }
    root.append(svg('path', {d: dots.join(''), class: 'nodes',
      'stroke-width': Math.max(3, Math.min(7, laneH * 0.45))}));

    // Exploit arrows: parent (at the copied step) -> child (at its step). A
    // restart from the member's own weights (Iterated PBT's shrink and
    // perturb) stays on its lane: no arrow.
    const arrows = svg('g', {class: 'arrows'});
    m.exploits.forEach((r) => {
      const parent = parentKey(r);
      if (parent === null || parent === r.key || !m.lane.has(parent)) return;
      const x1 = x(Number.isFinite(r.parent_step) ? r.parent_step : r.step);
      const y1 = y(parent);
      const x2 = x(r.step);
      const y2 = y(r.key);
      const bend = Math.max(18, Math.abs(y2 - y1) * 0.25);
      const d = `M${x1.toFixed(1)},${y1.toFixed(1)}C${(x1 + bend).toFixed(1)},${y1.toFixed(1)} ` +
        `${(x2 - bend).toFixed(1)},${y2.toFixed(1)} ${x2.toFixed(1)},${y2.toFixed(1)}`;
      const path = svg('path', {d, class: m.isOnBest(r) ? 'exploit-arrow on-best' : 'exploit-arrow',
        'marker-end': 'url(#arrowhead)', 'data-child': r.key, 'data-parent': parent,
        'data-step': r.step});
      path.addEventListener('mouseenter', (ev) => this.hover(r, ev));
      path.addEventListener('mouseleave', () => this.unhover());
      path.addEventListener('click', (ev) => {
        ev.stopPropagation();
        this.pin(r);
      });
      arrows.append(path);
    });
    root.append(arrows);

    this.marker = svg('circle', {r: 5, class: 'hover-marker', visibility: 'hidden'});
    root.append(this.marker);
    root.addEventListener('mousemove', (ev) => {
      if (ev.target.classList && ev.target.classList.contains('exploit-arrow')) return;
      const r = this.nodeAt(ev);
      if (r) this.hover(r, ev);
      else this.unhover();
    });
    root.addEventListener('mouseleave', () => this.unhover());
    root.addEventListener('click', (ev) => {
      const r = this.nodeAt(ev);
      if (r) this.pin(r);
    });
    if (this.svgTree) this.svgTree.remove();
    this.svgTree = root;
    this.wrap.append(root);
  }

  // The record nearest the pointer within its lane (binary search on steps).
  nodeAt(ev) {
    const m = this.model;
    const g = this.geom;
    const box = this.svgTree.getBoundingClientRect();
    const px = ev.clientX - box.left;
    const py = ev.clientY - box.top;
    const i = Math.floor((py - g.top) / g.laneH);
    if (i < 0 || i >= m.members.length || px < g.left - 6) return null;
    const recs = m.byMember.get(m.members[i]);
    if (!recs.length) return null;
    const step = ((px - g.left) / (g.width - g.left - g.right)) * g.span;
    let lo = 0;
    let hi = recs.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (recs[mid].step < step) lo = mid + 1;
      else hi = mid;
    }
    let best = recs[lo];
    if (lo > 0 && Math.abs(recs[lo - 1].step - step) < Math.abs(best.step - step)) best = recs[lo - 1];
    // Several records at one step (init + exploit): show the latest.
    const same = recs.filter((r) => r.step === best.step);
    best = same[same.length - 1];
    return Math.abs(g.x(best.step) - px) <= 12 ? best : null;
  }

  hover(r, ev) {
    const g = this.geom;
    this.marker.setAttribute('cx', g.x(r.step));
    this.marker.setAttribute('cy', g.y(r.key));
    this.marker.setAttribute('visibility', 'visible');
    this.tooltip.replaceChildren(...this.describe(r, true));
    this.tooltip.hidden = false;
    const w = this.tooltip.offsetWidth;
    const h = this.tooltip.offsetHeight;
    const left = ev.clientX + 14 + w > window.innerWidth ? ev.clientX - 14 - w : ev.clientX + 14;
    const top = ev.clientY + 14 + h > window.innerHeight ? ev.clientY - 14 - h : ev.clientY + 14;
    this.tooltip.style.left = `${Math.max(0, left)}px`;
    this.tooltip.style.top = `${Math.max(0, top)}px`;
    if (this.pinned === null) this.details.replaceChildren(...this.describe(r, false));
  }

  unhover() {
    if (this.marker) this.marker.setAttribute('visibility', 'hidden');
    this.tooltip.hidden = true;
  }

  pin(r) {
    this.pinned = r;
    this.details.replaceChildren(...this.describe(r, false));
  }

  describe(r, short) {
    const m = this.model;
    const out = [el('div', {class: 'title'},
      el('strong', {}, `member ${r.key}`), ` \u00b7 step ${r.step} \u00b7 ${r.action}`)];
    out.push(el('div', {}, `${r.monitor || m.monitor}: ${fmt(r.metric)}`));
    const parent = parentKey(r);
    if (parent === r.key) {
      out.push(el('div', {}, `from its own weights at step ${fmt(r.parent_step)}`));
    } else if (parent !== null) {
      out.push(el('div', {}, `copied member ${parent} at step ${fmt(r.parent_step)}` +
        ` (${r.monitor || m.monitor} ${fmt(r.parent_metric)})`));
    }
    if (r.reason && !short) out.push(el('div', {class: 'reason'}, `reason: ${r.reason}`));
    const table = el('table', {class: 'hparams'},
      el('tr', {}, el('th', {}, 'hparam'), el('th', {}, 'before'),
        el('th', {}, 'after'), el('th', {}, 'explore')));
    const names = [...new Set([...Object.keys(r.hparams || {}), ...Object.keys(r.hparams_before || {})])].sort();
    for (const name of names) {
      table.append(el('tr', {}, el('td', {}, name),
        el('td', {}, r.hparams_before ? fmt(r.hparams_before[name]) : ''),
        el('td', {}, fmt((r.hparams || {})[name])),
        el('td', {}, fmt((r.ops || {})[name]))));
    }
    out.push(table);
    if (!short && r.run) out.push(el('div', {class: 'run'}, `run: ${r.run}`));
    return out;
  }
}
