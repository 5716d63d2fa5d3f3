// PBT lineage tab for TensorBoard: family tree, schedules, population table.
//
// An ES module loaded by TensorBoard's plugin iframe (base href
// `plugin/pbt_lineage/`), so every URL here is relative. Plain DOM + SVG, no
// library. Text from the logdir (run names, member ids, hyperparameter names
// and values) only ever reaches the page through `textContent`,
// `setAttribute` or `new Option`: never as HTML.

const SVG_NS = 'http://www.w3.org/2000/svg';
const API_VERSION = 1;
const EXPLOIT_ACTIONS = new Set(['exploit', 'restart']);
const NONFINITE = {NaN: NaN, Infinity: Infinity, '-Infinity': -Infinity};
// Viridis, sampled: worst metric dark, best bright.
const RAMP = ['#440154', '#3b528b', '#21918c', '#5ec962', '#fde725'];
const BUCKETS = 24;

// ------------------------------------------------------------------ helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  }
  for (const c of children) {
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  }
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function num(v) {
  if (typeof v === 'number') return v;
  if (typeof v === 'string' && v in NONFINITE) return NONFINITE[v];
  return NaN;
}

function fmt(v) {
  if (v === null || v === undefined) return '';
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) return String(v);
    if (Number.isInteger(v)) return String(v);
    const a = Math.abs(v);
    return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(3) : String(+v.toPrecision(4));
  }
  if (typeof v === 'string') return v;
  return JSON.stringify(v);
}

// Round step values for an axis from 0 to `span`: multiples of 1, 2 or 5 x 10^k.
function niceTicks(span, count) {
  const raw = span / count;
  const mag = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 1))));
  const step = [1, 2, 5, 10].map((f) => f * mag).find((v) => v >= raw) || raw;
  const out = [];
  for (let s = 0; s <= span + 1e-9; s += step) out.push(Math.round(s));
  return out;
}

function truncate(s, n) {
  return s.length > n ? s.slice(0, n - 1) + '\u2026' : s;
}

function colour(t) {
  if (!Number.isFinite(t)) return '#bbbbbb';
  t = Math.min(1, Math.max(0, t)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(t));
  const f = t - i;
  const a = parseInt(RAMP[i].slice(1), 16);
  const b = parseInt(RAMP[i + 1].slice(1), 16);
  const mix = (s) => Math.round(((a >> s) & 255) * (1 - f) + ((b >> s) & 255) * f);
  return `rgb(${mix(16)},${mix(8)},${mix(0)})`;
}

async function getJSON(url) {
  const res = await fetch(url, {headers: {Accept: 'application/json'}});
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  const data = await res.json();
  if (!data || data.version !== API_VERSION) {
    throw new Error(`${url}: unsupported answer version ${data && data.version}`);
  }
  return data;
}

// -------------------------------------------------------------------- model

// Index records by member for drawing. Which member is best, its ancestry and
// its schedule come from the server (`data.best`, computed by
// keras_pbt.core.ancestry): the tab draws them and never re-derives the policy.
export function buildModel(data) {
  const members = (data.members || []).map((m) => String(m.id));
  const byMember = new Map(members.map((k) => [k, []]));
  const records = [];
  for (const raw of data.records || []) {
    const key = String(raw.member);
    if (!byMember.has(key)) {
      byMember.set(key, []);
      members.push(key);
    }
    const r = {...raw, key, metricValue: num(raw.metric)};
    byMember.get(key).push(r);
    records.push(r);
  }
  const order = {init: 0, restart: 1, exploit: 1, keep: 2};
  for (const recs of byMember.values()) {
    recs.sort((a, b) => a.step - b.step || (order[a.action] ?? 3) - (order[b.action] ?? 3));
  }
  const lane = new Map(members.map((k, i) => [k, i]));
  const exploits = records.filter((r) => EXPLOIT_ACTIONS.has(r.action));
  let maxStep = 0;
  let lo = Infinity;
  let hi = -Infinity;
  for (const r of records) {
    maxStep = Math.max(maxStep, r.step, Number.isFinite(r.parent_step) ? r.parent_step : 0);
    if (Number.isFinite(r.metricValue)) {
      lo = Math.min(lo, r.metricValue);
      hi = Math.max(hi, r.metricValue);
    }
  }
  const mode = data.mode === 'min' ? 'min' : 'max';
  // What the server says of each member: its metric (the one the ranking
  // used) and rank; the rest is counted from the records for the table.
  const best = data.best || null;
  const rank = new Map((best ? best.ranking : []).map((k, i) => [String(k), i + 1]));
  const current = new Map();
  for (const info of data.members || []) {
    const k = String(info.id);
    const recs = byMember.get(k);
    if (!recs.length) continue;
    current.set(k, {
      last: recs[recs.length - 1],
      metric: info.metric === null || info.metric === undefined ? null : num(info.metric),
      rank: rank.has(k) ? rank.get(k) : null,
      exploits: recs.filter((r) => EXPLOIT_ACTIONS.has(r.action)).length,
    });
  }
  const hparamNames = [...new Set(records.flatMap((r) => Object.keys(r.hparams || {})))].sort();
  // The ancestry as pieces of lanes (member steps) and the exploit records
  // on it: the record of each entry that copied a parent.
  const ancestry = (best ? best.ancestry : []).map((e) => ({
    key: String(e.member), from: e.member_step, to: e.member_end_step, entry: e}));
  const onBest = new Set(ancestry.filter((p) => EXPLOIT_ACTIONS.has(p.entry.action))
    .map((p) => `${p.key}\u0000${p.from}`));
  return {
    data, members, byMember, lane, records, exploits, maxStep, mode, current, hparamNames,
    metricLo: lo, metricHi: hi, monitor: data.monitor || 'metric',
    best: best ? String(best.member) : null, bestInfo: best, ancestry,
    isOnBest: (r) => EXPLOIT_ACTIONS.has(r.action) && onBest.has(`${r.key}\u0000${r.step}`),
  };
}

// ------------------------------------------------------------------- the tab

class LineageTab {
  constructor(root) {
    this.root = root;
    this.model = null;
    this.pinned = null;
    this.sort = {column: 'rank', dir: 1};
    this.build();
  }

  build() {
    this.select = el('select', {id: 'experiment', 'aria-label': 'Experiment'});
    this.select.addEventListener('change', () => this.load(this.select.value));
    this.status = el('span', {class: 'status', role: 'status'});
    this.message = el('div', {class: 'message', role: 'alert', hidden: ''});
    const header = el('header', {},
      el('h1', {}, 'PBT lineage'),
      el('label', {}, 'Experiment ', this.select), this.status);
    this.legend = el('div', {class: 'legend'});
    this.treeWrap = el('div', {class: 'tree-wrap'});
    // Fixed to the viewport, so the scrolling tree does not clip it.
    this.tooltip = el('div', {class: 'tooltip', hidden: ''});
    this.details = el('div', {class: 'details'},
      el('p', {class: 'hint'}, 'Hover or click a node or an arrow for details.'));
    this.schedule = el('div', {class: 'schedule'});
    this.table = el('table', {class: 'population'});
    this.root.append(
      header, this.message,
      el('section', {class: 'tree-section'},
        el('h2', {}, 'Family tree'), this.legend, this.treeWrap, this.details),
      el('section', {}, el('h2', {}, 'The schedule PBT found'), this.schedule),
      el('section', {}, el('h2', {}, 'Population'), this.table), this.tooltip);
    let timer = null;
    window.addEventListener('resize', () => {
      clearTimeout(timer);
      timer = setTimeout(() => this.model && this.draw(), 150);
    });
  }

  showMessage(lines) {
    this.message.replaceChildren(...lines.map((l) => el('div', {}, l)));
    this.message.hidden = lines.length === 0;
  }

  async start() {
    this.root.dataset.state = 'loading';
    let listing;
    try {
      listing = await getJSON('./experiments');
    } catch (e) {
      this.fail(`Could not list the PBT experiments: ${e.message}`);
      return;
    }
    const names = listing.experiments.map((x) => x.name);
    if (!names.length) {
      this.fail('No PBT lineage data in this logdir. Pass logdir= to PBTCallback to write it.');
      return;
    }
    for (const x of listing.experiments) {
      const label = x.name === '.' ? '(logdir root)' : x.name;
      this.select.append(new Option(`${label} \u2014 ${x.runs.length} runs`, x.name));
    }
    await this.load(names[0]);
  }

  fail(text) {
    this.showMessage([text]);
    this.root.dataset.state = 'error';
  }

  async load(name) {
    this.root.dataset.state = 'loading';
    this.status.textContent = 'Loading\u2026';
    let data;
    try {
      data = await getJSON(`./lineage?experiment=${encodeURIComponent(name)}`);
    } catch (e) {
      this.status.textContent = '';
      this.fail(`Could not load experiment ${name}: ${e.message}`);
      return;
    }
    try {
      this.model = buildModel(data);
      this.pinned = null;
      const errors = data.errors || [];
      const lines = errors.slice(0, 8).map((e) =>
        `Could not read run ${e.run}${e.step === null ? '' : ` at step ${e.step}`}: ${e.message}`);
      if (errors.length > 8) lines.push(`\u2026 and ${errors.length - 8} more.`);
      if (errors.length) lines.unshift(`${errors.length} lineage summaries are malformed or truncated; the rest is shown.`);
      if (!this.model.records.length) lines.push('This experiment has no readable lineage records.');
      else if (data.best_error) lines.push(`No best member to highlight: ${data.best_error}`);
      this.showMessage(lines);
      this.draw();
    } catch (e) {
      this.fail(`Could not draw experiment ${name}: ${e.message}`);
      return;
    }
    const m = this.model;
    this.root.dataset.members = String(m.members.length);
    this.root.dataset.exploits = String(m.exploits.length);
    this.root.dataset.best = m.best === null ? '' : m.best;
    this.status.textContent = `${m.members.length} members, ${m.records.length} records, ` +
      `${m.exploits.length} exploits, monitor ${m.monitor} (${m.mode})`;
    this.root.dataset.experiment = name;
    this.root.dataset.state = 'ready';
  }

  draw() {
    this.drawLegend();
    this.drawTree();
    this.drawSchedule();
    this.drawTable();
  }

  // ------------------------------------------------------------- legend

  drawLegend() {
    const m = this.model;
    const bar = svg('svg', {width: 160, height: 12, class: 'ramp'});
    for (let i = 0; i < 32; i++) {
      const t = m.mode === 'min' ? 1 - i / 31 : i / 31;
      bar.append(svg('rect', {x: i * 5, y: 0, width: 5, height: 12, fill: colour(t)}));
    }
    const lo = Number.isFinite(m.metricLo) ? fmt(m.metricLo) : '?';
    const hi = Number.isFinite(m.metricHi) ? fmt(m.metricHi) : '?';
    this.legend.replaceChildren(
      el('span', {}, `${m.monitor}: ${lo} `), bar, el('span', {}, ` ${hi}`),
      el('span', {class: 'key-arrow'}, '  \u2192 exploit (parent \u2192 child)'),
      el('span', {class: 'key-best'}, '  \u2501 ancestry of the best member' +
        (m.best === null ? '' : ` (${truncate(m.best, 40)})`)));
  }

  metricT(v) {
    const m = this.model;
    if (!Number.isFinite(v)) return NaN;
    const t = m.metricHi > m.metricLo ? (v - m.metricLo) / (m.metricHi - m.metricLo) : 1;
    return m.mode === 'min' ? 1 - t : t;
  }

  // --------------------------------------------------------------- tree

  drawTree() {
    const m = this.model;
    const n = Math.max(1, m.members.length);
    const width = Math.max(600, this.treeWrap.clientWidth || 900);
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
        const t = this.metricT(r.metricValue);
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

    // Exploit arrows: parent (at the copied step) -> child (at its step).
    const arrows = svg('g', {class: 'arrows'});
    m.exploits.forEach((r) => {
      const parent = r.parent === null || r.parent === undefined ? null : String(r.parent);
      if (parent === null || !m.lane.has(parent)) return;
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
    this.treeWrap.append(root);
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
    if (r.parent !== null && r.parent !== undefined) {
      out.push(el('div', {}, `copied member ${String(r.parent)} at step ${fmt(r.parent_step)}` +
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

  // ----------------------------------------------------------- schedule

  drawSchedule() {
    const m = this.model;
    const charts = [];
    const width = Math.max(600, this.schedule.clientWidth || 900);
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
    this.schedule.replaceChildren(
      el('p', {class: 'hint'}, 'Grey: every member. Highlighted: the hyperparameters the best ' +
        'final member actually trained with, through the members it copied.'),
      ...charts, summary);
  }

  // -------------------------------------------------------------- table

  drawTable() {
    const m = this.model;
    const columns = [
      {id: 'rank', label: 'rank', get: (k) => m.current.get(k).rank},
      {id: 'member', label: 'member', get: (k) => k},
      {id: 'step', label: 'step', get: (k) => m.current.get(k).last.step},
      {id: 'metric', label: m.monitor, get: (k) => m.current.get(k).metric},
      ...m.hparamNames.map((n) => ({id: `hp:${n}`, label: n,
        get: (k) => (m.current.get(k).last.hparams || {})[n]})),
      {id: 'exploits', label: 'exploits', get: (k) => m.current.get(k).exploits},
      {id: 'action', label: 'last action', get: (k) => m.current.get(k).last.action},
    ];
    const col = columns.find((c) => c.id === this.sort.column) || columns[0];
    const keyOf = (v) => (typeof v === 'number' ? v : num(v));
    const rows = m.members.filter((k) => m.current.has(k));
    rows.sort((a, b) => {
      const va = col.get(a);
      const vb = col.get(b);
      const na = keyOf(va);
      const nb = keyOf(vb);
      let c;
      if (Number.isFinite(na) && Number.isFinite(nb)) c = na - nb;
      else if (Number.isFinite(na) !== Number.isFinite(nb)) return Number.isFinite(na) ? -1 : 1;
      else c = String(va).localeCompare(String(vb), undefined, {numeric: true});
      return c * this.sort.dir;
    });
    const head = el('tr');
    for (const c of columns) {
      const th = el('th', {'data-column': c.id, tabindex: 0,
        'aria-sort': c === col ? (this.sort.dir > 0 ? 'ascending' : 'descending') : 'none'},
        c.label + (c === col ? (this.sort.dir > 0 ? ' \u25b2' : ' \u25bc') : ''));
      const activate = () => {
        this.sort = {column: c.id, dir: this.sort.column === c.id ? -this.sort.dir : 1};
        this.drawTable();
      };
      th.addEventListener('click', activate);
      th.addEventListener('keydown', (ev) => (ev.key === 'Enter' || ev.key === ' ') && activate());
      head.append(th);
    }
    const body = el('tbody');
    for (const k of rows) {
      const tr = el('tr', {'data-member': k, class: k === m.best ? 'best' : null});
      for (const c of columns) tr.append(el('td', {}, fmt(c.get(k))));
      body.append(tr);
    }
    this.table.replaceChildren(el('thead', {}, head), body);
  }
}

export async function render() {
  const css = el('link', {rel: 'stylesheet', href: './static/style.css'});
  document.head.append(css);
  const root = el('div', {class: 'pbt-lineage', 'data-state': 'loading'});
  document.body.append(root);
  const tab = new LineageTab(root);
  await tab.start();
}
