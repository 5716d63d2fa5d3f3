// The population table: one row per member, sortable by any column.

import {el, fmt, num} from './dom.js';

export class PopulationTable {
  constructor(table) {
    this.table = table;
    this.model = null;
    this.sort = {column: 'rank', dir: 1};
  }

  draw(model) {
    this.model = model;
    const m = model;
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
        this.draw(m);
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
