// The tab's model: lineage records indexed by member for drawing.

import {EXPLOIT_ACTIONS, num} from './dom.js';

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
