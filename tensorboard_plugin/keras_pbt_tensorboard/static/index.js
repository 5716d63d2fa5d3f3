// PBT lineage tab for TensorBoard: family tree, schedules, population table.
//
// An ES module loaded by TensorBoard's plugin iframe (base href
// `plugin/pbt_lineage/`), so every URL here is relative. Plain DOM + SVG, no
// library. Text from the logdir (run names, member ids, hyperparameter names
// and values) only ever reaches the page through `textContent`,
// `setAttribute` or `new Option`: never as HTML.
//
// This module is the tab itself; its parts are ES modules under `static/`
// (served by the plugin's `/static/*` route): dom.js, model.js, legend.js,
// tree.js, schedule.js, table.js.

import {el, getJSON} from './static/dom.js';
import {drawLegend} from './static/legend.js';
import {buildModel} from './static/model.js';
import {drawSchedule} from './static/schedule.js';
import {PopulationTable} from './static/table.js';
import {TreeView} from './static/tree.js';

export {buildModel};

class LineageTab {
  constructor(root) {
    this.root = root;
    this.model = null;
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
    const treeWrap = el('div', {class: 'tree-wrap'});
    // Fixed to the viewport, so the scrolling tree does not clip it.
    const tooltip = el('div', {class: 'tooltip', hidden: ''});
    const details = el('div', {class: 'details'},
      el('p', {class: 'hint'}, 'Hover or click a node or an arrow for details.'));
    this.schedule = el('div', {class: 'schedule'});
    const table = el('table', {class: 'population'});
    this.tree = new TreeView(treeWrap, details, tooltip);
    this.populationTable = new PopulationTable(table);
    this.root.append(
      header, this.message,
      el('section', {class: 'tree-section'},
        el('h2', {}, 'Family tree'), this.legend, treeWrap, details),
      el('section', {}, el('h2', {}, 'The schedule PBT found'), this.schedule),
      el('section', {}, el('h2', {}, 'Population'), table), tooltip);
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
      this.tree.pinned = null;
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
    drawLegend(this.legend, this.model);
    this.tree.draw(this.model);
    drawSchedule(this.schedule, this.model);
    this.populationTable.draw(this.model);
  }
}

  // ------------------------------------------------------------- legend

export async function render() {
  const css = el('link', {rel: 'stylesheet', href: './static/style.css'});
  document.head.append(css);
  const root = el('div', {class: 'pbt-lineage', 'data-state': 'loading'});
  document.body.append(root);
  const tab = new LineageTab(root);
  await tab.start();
}
