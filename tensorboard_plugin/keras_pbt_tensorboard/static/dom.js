// Helpers of the PBT lineage tab: DOM and SVG builders, number formatting,
// the metric colour ramp, and the JSON fetch of the plugin's routes.
//
// Text from the logdir only ever reaches the page through `textContent`,
// `setAttribute` or `new Option`: never as HTML.

const SVG_NS = 'http://www.w3.org/2000/svg';
const API_VERSION = 1;
export const EXPLOIT_ACTIONS = new Set(['exploit', 'restart']);
const NONFINITE = {NaN: NaN, Infinity: Infinity, '-Infinity': -Infinity};
// Viridis, sampled: worst metric dark, best bright.
const RAMP = ['#440154', '#3b528b', '#21918c', '#5ec962', '#fde725'];
export const BUCKETS = 24;

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  }
  for (const c of children) {
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  }
  if (text !== undefined) node.textContent = String(text);
  return node;
}

export function num(v) {
  if (typeof v === 'number') return v;
  if (typeof v === 'string' && v in NONFINITE) return NONFINITE[v];
  return NaN;
}

export function fmt(v) {
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
export function niceTicks(span, count) {
  const raw = span / count;
  const mag = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 1))));
  const step = [1, 2, 5, 10].map((f) => f * mag).find((v) => v >= raw) || raw;
  const out = [];
  for (let s = 0; s <= span + 1e-9; s += step) out.push(Math.round(s));
  return out;
}

export function truncate(s, n) {
  return s.length > n ? s.slice(0, n - 1) + '\u2026' : s;
}

export function colour(t) {
  if (!Number.isFinite(t)) return '#bbbbbb';
  t = Math.min(1, Math.max(0, t)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(t));
  const f = t - i;
  const a = parseInt(RAMP[i].slice(1), 16);
  const b = parseInt(RAMP[i + 1].slice(1), 16);
  const mix = (s) => Math.round(((a >> s) & 255) * (1 - f) + ((b >> s) & 255) * f);
  return `rgb(${mix(16)},${mix(8)},${mix(0)})`;
}

export async function getJSON(url) {
  const res = await fetch(url, {headers: {Accept: 'application/json'}});
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  const data = await res.json();
  if (!data || data.version !== API_VERSION) {
    throw new Error(`${url}: unsupported answer version ${data && data.version}`);
  }
  return data;
}
