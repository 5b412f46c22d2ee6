/* ckx dashboard: renders the embedded experiment data as SVG plots and tables; filters by tag, machine and
   swept parameter; a sweep's experiment gets a plot per swept parameter and a machine-by-configuration table. */
(function () {
  'use strict';

  const SVGNS = 'http://www.w3.org/2000/svg';
  const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf',
                   '#7f7f7f', '#bcbd22'];
  const PERCENTILES = ['p50', 'p90', 'p95', 'p97', 'p99', 'p99.9'];
  const data = JSON.parse(document.getElementById('ckx-data').textContent);
  const active = new Set();
  const shownMachines = new Set();  // none selected: every machine
  const shownValues = new Map();  // swept parameter -> the values selected (none: every value)

  // -- small utilities -----------------------------------------------------------------------------
  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(key, value);
    }
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function sv(tag, attrs, text) {
    const node = document.createElementNS(SVGNS, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(key, String(value));
    }
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function tip(node, text) {
    node.appendChild(sv('title', {}, text));
    return node;
  }

  function isNum(v) {
    return typeof v === 'number' && isFinite(v);
  }

  function fmt(v) {
    if (!isNum(v)) return '-';
    if (v === 0) return '0';
    const a = Math.abs(v);
    if (a >= 1000) return v.toFixed(1);
    if (a >= 1) return v.toFixed(3);
    return v.toPrecision(4);
  }

  function color(machine) {
    return PALETTE[machine % PALETTE.length];
  }

  function visible(point) {
    for (const tag of active) {
      if (!point.tags.includes(tag)) return false;
    }
    if (shownMachines.size && !shownMachines.has(point.machine)) return false;
    for (const [param, values] of shownValues) {
      if (values.size && !(point.sweep && values.has(point.sweep[param]))) return false;
    }
    return true;
  }

  // The swept parameters of the points, in the order they were swept, and each one's values.
  function sweptParams(points) {
    const params = new Map();
    for (const p of points) {
      for (const [k, v] of Object.entries(p.sweep || {})) {
        if (!params.has(k)) params.set(k, []);
        if (!params.get(k).includes(v)) params.get(k).push(v);
      }
    }
    for (const values of params.values()) sortValues(values);
    return params;
  }

  function sortValues(values) {
    const numeric = values.every(v => v !== '' && isFinite(Number(v)));
    values.sort(numeric ? (a, b) => Number(a) - Number(b) : (a, b) => (a < b ? -1 : a > b ? 1 : 0));
    return values;
  }

  // Axis labels for a set of points: the uid prefix and what varies among them (command key, env, machine).
  function labeller(points) {
    const keys = new Set();
    for (const p of points) for (const k of Object.keys(p.env)) keys.add(k);
    const varying = Array.from(keys).sort()
      .filter(k => new Set(points.map(p => (k in p.env ? p.env[k] : null))).size > 1);
    const cmdVaries = new Set(points.map(p => p.cmd_key)).size > 1;
    const machineVaries = new Set(points.map(p => p.machine)).size > 1;
    return p => {
      const parts = [p.uid.slice(0, 6)];
      if (cmdVaries) parts.push(p.cmd_key || '-');
      for (const k of varying) parts.push(`${k}=${k in p.env ? p.env[k] : '-'}`);
      if (machineVaries) parts.push(data.machines[p.machine].hostname || '?');
      const text = parts.join(' ');
      return text.length > 26 ? text.slice(0, 25) + '…' : text;
    };
  }

  function tickText(v) {
    return String(Number(v.toPrecision(6)));
  }

  function niceTicks(lo, hi, count) {
    const span = hi - lo;
    const raw = span / Math.max(count, 1);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map(m => m * mag).find(s => span / s <= count) || 10 * mag;
    const ticks = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
    return ticks;
  }

  function domain(values) {
    let lo = Math.min(...values);
    let hi = Math.max(...values);
    if (lo === hi) {
      const pad = lo === 0 ? 1 : Math.abs(lo) * 0.1;
      lo -= pad;
      hi += pad;
    } else {
      const pad = (hi - lo) * 0.08;
      lo = lo >= 0 && lo - pad < 0 ? 0 : lo - pad;
      hi += pad;
    }
    return [lo, hi];
  }

  // A frame: axes, grid and a y scale; returns {svg, y, x0, band, plotWidth}.
  function frame(categories, values, yLabel) {
    const left = 110, right = 16, top = 12, bottom = 96;
    const band = Math.max(46, Math.min(110, 720 / Math.max(categories.length, 1)));
    const plotWidth = band * categories.length;
    const width = left + plotWidth + right;
    const height = 320;
    const plotHeight = height - top - bottom;
    const [lo, hi] = domain(values);
    const y = v => top + plotHeight - (v - lo) / (hi - lo) * plotHeight;
    const svg = sv('svg', {width: width, height: height, viewBox: `0 0 ${width} ${height}`, role: 'img'});
    const grid = sv('g', {class: 'grid'});
    const axis = sv('g', {class: 'axis'});
    for (const t of niceTicks(lo, hi, 5)) {
      grid.appendChild(sv('line', {x1: left, x2: left + plotWidth, y1: y(t), y2: y(t)}));
      axis.appendChild(sv('text', {x: left - 6, y: y(t) + 4, 'text-anchor': 'end'}, tickText(t)));
    }
    axis.appendChild(sv('line', {x1: left, x2: left, y1: top, y2: top + plotHeight}));
    axis.appendChild(sv('line', {x1: left, x2: left + plotWidth, y1: top + plotHeight, y2: top + plotHeight}));
    categories.forEach((label, i) => {
      const cx = left + (i + 0.5) * band;
      axis.appendChild(sv('text', {x: cx, y: top + plotHeight + 14, 'text-anchor': 'end',
                                   transform: `rotate(-30 ${cx} ${top + plotHeight + 14})`}, label));
    });
    axis.appendChild(sv('text', {x: 60, y: top + plotHeight / 2, 'text-anchor': 'middle',
                                 transform: `rotate(-90 60 ${top + plotHeight / 2})`}, yLabel));
    svg.appendChild(grid);
    svg.appendChild(axis);
    return {svg: svg, y: y, x: i => left + (i + 0.5) * band, band: band};
  }

  function panel(title, note, svg, points) {
    const box = el('div', {class: 'plot'});
    box.appendChild(el('p', {class: 'title'}, title));
    if (note) box.appendChild(el('p', {class: 'note'}, note));
    box.appendChild(svg);
    box.appendChild(legend(points));
    return box;
  }

  function legend(points) {
    const box = el('div', {class: 'legend'});
    const seen = new Set();
    for (const p of points) {
      if (seen.has(p.machine)) continue;
      seen.add(p.machine);
      const item = el('span', {'data-machine': p.machine});
      item.appendChild(el('span', {class: 'swatch', style: `background:${color(p.machine)}`}));
      item.appendChild(document.createTextNode(data.machines[p.machine].label));
      box.appendChild(item);
    }
    return box;
  }

  // -- plots -------------------------------------------------------------------------------------
  // The headline metric of each point: every repetition as a dot, the median as a diamond,
  // +-stdev as a thick bar and min..max as a thin one; colour says which machine.
  function metricPlot(points, metric) {
    const withValues = points.filter(p => p.values.some(isNum));
    if (!withValues.length) return null;
    const all = [];
    for (const p of withValues) {
      for (const v of p.values) if (isNum(v)) all.push(v);
      if (p.stats && isNum(p.stats.stdev)) all.push(p.stats.median - p.stats.stdev, p.stats.median + p.stats.stdev);
    }
    const unit = metric.unit ? ` (${metric.unit})` : '';
    const f = frame(withValues.map(labeller(withValues)), all, (metric.name || 'metric') + unit);
    const marks = sv('g', {class: 'marks'});
    withValues.forEach((p, i) => {
      const cx = f.x(i);
      const c = color(p.machine);
      const g = sv('g', {'data-point': p.uid});
      if (p.stats) {
        const s = p.stats;
        g.appendChild(tip(sv('line', {class: 'err-minmax', x1: cx, x2: cx, y1: f.y(s.min), y2: f.y(s.max), stroke: c}),
                          `min ${fmt(s.min)}, max ${fmt(s.max)}`));
        if (isNum(s.stdev) && s.stdev > 0) {
          g.appendChild(tip(sv('line', {class: 'err-stdev', x1: cx, x2: cx, y1: f.y(s.median - s.stdev),
                                        y2: f.y(s.median + s.stdev), stroke: c}), `stdev ${fmt(s.stdev)}`));
        }
      }
      const values = p.values;
      const spread = Math.min(f.band / 3, 5 * (values.length - 1));
      values.forEach((v, j) => {
        if (!isNum(v)) return;
        const dx = values.length > 1 ? -spread / 2 + spread * j / (values.length - 1) : 0;
        g.appendChild(tip(sv('circle', {'data-kind': 'rep', 'data-point': p.uid, 'data-rep': j + 1, cx: cx + dx,
                                        cy: f.y(v), r: 3.5, fill: c}),
                          `${p.uid} repetition ${j + 1}: ${fmt(v)}${unit}`));
      });
      if (p.stats) {
        const m = f.y(p.stats.median);
        g.appendChild(tip(sv('path', {'data-kind': 'point', 'data-point': p.uid, class: 'median', fill: c,
                                      d: `M${cx - 7} ${m} L${cx} ${m - 6} L${cx + 7} ${m} L${cx} ${m + 6} Z`}),
                          `${p.uid} on ${data.machines[p.machine].label}\nmedian ${fmt(p.stats.median)}${unit}` +
                          ` ± ${fmt(p.stats.stdev)} (n=${p.stats.n})`));
      }
      marks.appendChild(g);
    });
    f.svg.appendChild(marks);
    f.svg.setAttribute('data-plot', 'metric');
    const where = new Set(withValues.map(p => p.machine)).size;
    const note = `median (diamond), ±stdev (thick bar), min–max (thin bar), repetitions (dots); ` +
                 `${withValues.length} point(s) on ${where} machine(s)`;
    return panel(`${metric.name || 'metric'}${unit}${metric.scenario ? ' — ' + metric.scenario : ''}`, note,
                 f.svg, withValues);
  }

  function latencyPlot(points) {
    const withLatency = points.filter(p => p.latency && PERCENTILES.some(k => isNum(p.latency[k])));
    if (!withLatency.length) return null;
    const keys = PERCENTILES.filter(k => withLatency.some(p => isNum(p.latency[k])));
    const all = [];
    for (const p of withLatency) for (const k of keys) if (isNum(p.latency[k])) all.push(p.latency[k]);
    const f = frame(keys, all, 'latency (ms)');
    const label = labeller(withLatency);
    const marks = sv('g', {class: 'marks'});
    for (const p of withLatency) {
      const c = color(p.machine);
      const g = sv('g', {'data-point': p.uid});
      const coords = [];
      keys.forEach((k, i) => {
        if (isNum(p.latency[k])) coords.push([f.x(i), f.y(p.latency[k]), k]);
      });
      g.appendChild(sv('polyline', {points: coords.map(xy => xy[0] + ',' + xy[1]).join(' '), fill: 'none',
                                    stroke: c, 'stroke-width': 1.5}));
      for (const [x, y, k] of coords) {
        g.appendChild(tip(sv('circle', {'data-kind': 'latency', 'data-point': p.uid, cx: x, cy: y, r: 3, fill: c}),
                          `${label(p)} ${k}: ${fmt(p.latency[k])} ms`));
      }
      marks.appendChild(g);
    }
    f.svg.appendChild(marks);
    f.svg.setAttribute('data-plot', 'latency');
    return panel('latency percentiles (median over repetitions)', 'one line per point', f.svg, withLatency);
  }

  // Top-1 accuracy of points whose headline metric is something else (accuracy runs plot it as their metric).
  function accuracyPlot(points) {
    const withAccuracy = points.filter(p => isNum(p.accuracy) && p.metric.name !== 'top1');
    if (!withAccuracy.length) return null;
    const values = [0, 100].concat(withAccuracy.map(p => p.accuracy));
    const f = frame(withAccuracy.map(labeller(withAccuracy)), values, 'top-1 (%)');
    const marks = sv('g', {class: 'marks'});
    withAccuracy.forEach((p, i) => {
      const w = Math.min(28, f.band * 0.6);
      const top = f.y(p.accuracy);
      marks.appendChild(tip(sv('rect', {'data-kind': 'accuracy', 'data-point': p.uid, x: f.x(i) - w / 2, y: top,
                                        width: w, height: Math.max(0, f.y(0) - top), fill: color(p.machine)}),
                            `${p.uid}: top-1 ${fmt(p.accuracy)}%`));
    });
    f.svg.appendChild(marks);
    f.svg.setAttribute('data-plot', 'accuracy');
    return panel('accuracy (top-1, median over repetitions)', null, f.svg, withAccuracy);
  }

  function metricGroups(points) {
    const groups = new Map();
    for (const p of points) {
      if (!p.metric || !p.metric.name) continue;
      const key = p.metric.name + '|' + (p.metric.unit || '');
      if (!groups.has(key)) groups.set(key, {metric: p.metric, points: []});
      groups.get(key).points.push(p);
    }
    return Array.from(groups.values());
  }

  // A sweep: the median metric against one swept parameter, one line per setting of the others (and machine).
  function paramPlot(points, param, values, metric) {
    const others = p => Object.entries(p.sweep).filter(([k]) => k !== param).map(([k, v]) => `${k}=${v}`)
      .concat(new Set(points.map(q => q.machine)).size > 1 ? [data.machines[p.machine].hostname || '?'] : [])
      .join(' ') || 'all';
    const lines = new Map();
    for (const p of points) {
      const key = others(p);
      if (!lines.has(key)) lines.set(key, []);
      lines.get(key).push(p);
    }
    const unit = metric.unit ? ` (${metric.unit})` : '';
    const f = frame(values, points.map(p => p.stats.median), (metric.name || 'metric') + unit);
    const marks = sv('g', {class: 'marks'});
    const legendBox = el('div', {class: 'legend'});
    Array.from(lines.keys()).forEach((key, li) => {
      const c = PALETTE[li % PALETTE.length];
      const line = lines.get(key).slice().sort((a, b) => values.indexOf(a.sweep[param]) - values.indexOf(b.sweep[param]));
      const g = sv('g', {'data-line': key});
      const coords = line.map(p => [f.x(values.indexOf(p.sweep[param])), f.y(p.stats.median), p]);
      g.appendChild(sv('polyline', {points: coords.map(xy => xy[0] + ',' + xy[1]).join(' '), fill: 'none', stroke: c,
                                    'stroke-width': 1.5}));
      for (const [x, y, p] of coords) {
        g.appendChild(tip(sv('circle', {'data-kind': 'sweep-point', 'data-point': p.uid, 'data-machine': p.machine,
                                        cx: x, cy: y, r: 4, fill: c}),
                          `${param}=${p.sweep[param]} · ${key}\nmedian ${fmt(p.stats.median)}${unit} on ` +
                          `${data.machines[p.machine].label}`));
      }
      marks.appendChild(g);
      const item = el('span', {});
      item.appendChild(el('span', {class: 'swatch', style: `background:${c}`}));
      item.appendChild(document.createTextNode(key));
      legendBox.appendChild(item);
    });
    f.svg.appendChild(marks);
    f.svg.setAttribute('data-plot', 'sweep');
    f.svg.setAttribute('data-param', param);
    f.svg.setAttribute('data-metric', metric.name || '');
    const box = el('div', {class: 'plot'});
    box.appendChild(el('p', {class: 'title'}, `${metric.name || 'metric'}${unit} against ${param}`));
    box.appendChild(el('p', {class: 'note'}, `median over repetitions; one line per setting of the other ` +
                                             `parameters; ${points.length} point(s)`));
    box.appendChild(f.svg);
    box.appendChild(legendBox);
    return box;
  }

  function sweepPlots(points) {
    const measured = points.filter(p => p.sweep && p.stats && isNum(p.stats.median));
    const box = el('div', {class: 'plots sweep'});
    const params = sweptParams(measured);
    for (const group of metricGroups(measured)) {
      for (const param of params.keys()) {
        const own = group.points.filter(p => param in p.sweep);
        const values = sortValues(Array.from(new Set(own.map(p => p.sweep[param]))));
        if (values.length > 1) box.appendChild(paramPlot(own, param, values, group.metric));
      }
    }
    return box.children.length ? box : null;
  }

  // Rows: the sweep's configurations; columns: the machines; cells: median ± stdev, or failed.
  function machineTable(points) {
    const swept = points.filter(p => p.sweep);
    if (!swept.length) return null;
    const machines = Array.from(new Set(swept.map(p => p.machine))).sort((a, b) => a - b);
    const rows = new Map();
    for (const p of swept) {
      const label = Object.entries(p.sweep).map(([k, v]) => `${k}=${v}`).join(' ');
      if (!rows.has(label)) rows.set(label, new Map());
      rows.get(label).set(p.machine, p);
    }
    const table = el('table', {class: 'points machines', 'data-table': 'machines'});
    const head = el('tr');
    head.appendChild(el('th', {}, 'configuration'));
    for (const m of machines) head.appendChild(el('th', {'data-machine': m}, data.machines[m].label));
    table.appendChild(el('thead')).appendChild(head);
    const body = table.appendChild(el('tbody'));
    for (const [label, cells] of rows) {
      const row = el('tr', {'data-configuration': label});
      row.appendChild(el('td', {class: 'mono'}, label));
      for (const m of machines) {
        const p = cells.get(m);
        let text = '-';
        if (p && p.status === 'failed') text = 'failed';
        else if (p && p.stats) text = `${fmt(p.stats.median)} ± ${fmt(p.stats.stdev)} ${p.metric.unit || ''}`.trim();
        row.appendChild(el('td', {class: p && p.status === 'failed' ? 'num invalid' : 'num',
                                  'data-point': p ? p.uid : null, title: p && p.node ? `ran on ${p.node}` : null}, text));
      }
      body.appendChild(row);
    }
    return table;
  }

  // -- tables ------------------------------------------------------------------------------------
  const COLUMNS = ['point', 'cmd_key', 'env', 'machine', 'reps', 'metric', 'median', 'stdev', 'min', 'max', 'range %',
                   'p50 ms', 'p90 ms', 'p99 ms', 'top-1 %', 'valid', 'program', 'deps'];

  function pointsTable(points) {
    const table = el('table', {class: 'points'});
    const head = el('tr');
    for (const c of COLUMNS) head.appendChild(el('th', {}, c));
    table.appendChild(el('thead')).appendChild(head);
    const body = table.appendChild(el('tbody'));
    for (const p of points) {
      const s = p.stats || {};
      const lat = p.latency || {};
      const env = Object.entries(p.env).map(([k, v]) => `${k}=${v}`).join(' ');
      const deps = Object.entries(p.deps).map(([k, v]) => `${k} ${v || '?'}`).join(', ');
      const nValid = p.valid.filter(v => v === true).length;
      const nKnown = p.valid.filter(v => v === true || v === false).length;
      const cells = [
        [p.uid.slice(0, 8), 'mono', p.uid], [p.cmd_key, 'mono'], [env, 'mono'],
        [data.machines[p.machine].label, ''], [p.n, 'num'], [p.metric.name || '-', ''], [fmt(s.median), 'num'],
        [fmt(s.stdev), 'num'], [fmt(s.min), 'num'], [fmt(s.max), 'num'], [fmt(s.range_pct), 'num'],
        [fmt(lat.p50), 'num'], [fmt(lat.p90), 'num'], [fmt(lat.p99), 'num'], [fmt(p.accuracy), 'num'],
        [nKnown ? `${nValid}/${nKnown}` : '-', nKnown && nValid < nKnown ? 'num invalid' : 'num'],
        [p.program, ''], [deps, ''],
      ];
      const row = el('tr', {'data-point': p.uid});
      for (const [text, cls, title] of cells) {
        row.appendChild(el('td', {class: cls || null, title: title || null}, text));
      }
      body.appendChild(row);
    }
    return table;
  }

  // -- page --------------------------------------------------------------------------------------
  function renderFilters() {
    const box = document.getElementById('filters');
    box.textContent = '';
    box.appendChild(el('span', {class: 'label'}, 'tags:'));
    const counts = new Map();
    for (const p of data.points) for (const t of p.tags) counts.set(t, (counts.get(t) || 0) + 1);
    for (const tag of Array.from(counts.keys()).sort()) {
      const button = el('button', {type: 'button', class: 'tag' + (active.has(tag) ? ' active' : ''), 'data-tag': tag,
                                   'aria-pressed': active.has(tag) ? 'true' : 'false'}, tag);
      button.appendChild(el('span', {class: 'count'}, counts.get(tag)));
      button.addEventListener('click', () => {
        if (active.has(tag)) active.delete(tag); else active.add(tag);
        render();
      });
      box.appendChild(button);
    }
    if (data.machines.length > 1) {
      const row = box.appendChild(el('div', {class: 'filter-row', id: 'machine-filters'}));
      row.appendChild(el('span', {class: 'label'}, 'machines:'));
      data.machines.forEach((machine, index) => {
        const on = shownMachines.has(index);
        const button = el('button', {type: 'button', class: 'tag' + (on ? ' active' : ''), 'data-machine-filter': index,
                                     'aria-pressed': on ? 'true' : 'false'}, machine.label);
        button.addEventListener('click', () => {
          if (on) shownMachines.delete(index); else shownMachines.add(index);
          render();
        });
        row.appendChild(button);
      });
    }
    for (const [param, values] of sweptParams(data.points)) {
      if (values.length < 2) continue;
      const row = box.appendChild(el('div', {class: 'filter-row', 'data-param-filters': param}));
      row.appendChild(el('span', {class: 'label'}, `${param}:`));
      const selected = shownValues.get(param) || new Set();
      for (const value of values) {
        const on = selected.has(value);
        const button = el('button', {type: 'button', class: 'tag' + (on ? ' active' : ''), 'data-param': param,
                                     'data-value': value, 'aria-pressed': on ? 'true' : 'false'}, value);
        button.addEventListener('click', () => {
          if (!shownValues.has(param)) shownValues.set(param, new Set());
          const set = shownValues.get(param);
          if (on) set.delete(value); else set.add(value);
          render();
        });
        row.appendChild(button);
      }
    }
    const filtering = active.size || shownMachines.size || Array.from(shownValues.values()).some(v => v.size);
    if (filtering) {
      const clear = el('button', {type: 'button', class: 'clear', id: 'clear-filters'}, 'clear');
      clear.addEventListener('click', () => { active.clear(); shownMachines.clear(); shownValues.clear(); render(); });
      box.appendChild(clear);
    }
  }

  function plotsFor(points) {
    const box = el('div', {class: 'plots'});
    for (const group of metricGroups(points)) {
      const plot = metricPlot(group.points, group.metric);
      if (plot) box.appendChild(plot);
    }
    for (const plot of [latencyPlot(points), accuracyPlot(points)]) if (plot) box.appendChild(plot);
    return box;
  }

  function render() {
    renderFilters();
    const shown = data.points.filter(visible);
    const reps = shown.reduce((n, p) => n + p.n, 0);
    const expShown = new Set(shown.map(p => p.exp));
    const summary = document.getElementById('summary');
    summary.setAttribute('data-points', shown.length);
    summary.setAttribute('data-repetitions', reps);
    summary.textContent = `showing ${shown.length} of ${data.points.length} point(s), ${reps} repetition(s), ` +
      `in ${expShown.size} of ${data.experiments.length} experiment(s)` +
      (active.size ? ` with tag(s) ${Array.from(active).join(', ')}` : '');

    const overview = document.getElementById('overview');
    overview.textContent = '';
    overview.appendChild(el('h2', {}, 'All experiments'));
    const machines = new Set(shown.map(p => p.machine)).size;
    overview.appendChild(el('div', {class: 'sub'}, `${shown.length} point(s) from ${machines} machine(s) in ` +
                                                   `${expShown.size} experiment(s)`));
    if (shown.length) overview.appendChild(plotsFor(shown));
    else overview.appendChild(el('p', {class: 'empty'}, 'no point matches the selected tags'));

    const container = document.getElementById('experiments');
    container.textContent = '';
    data.experiments.forEach((exp, index) => {
      const points = shown.filter(p => p.exp === index);
      if (!points.length) return;
      const section = el('section', {class: 'experiment', id: `experiment-${index}`, 'data-cid': exp.cid});
      section.appendChild(el('h2', {}, exp.cid));
      const total = data.points.filter(p => p.exp === index).length;
      let sub = `${exp.path} · tags: ${exp.tags.join(', ') || '-'} · ${points.length} of ${total} point(s)`;
      if (exp.migrated_from !== null && exp.migrated_from !== undefined) {
        sub += ` · read from schema_version ${exp.migrated_from}`;
      }
      section.appendChild(el('div', {class: 'sub'}, sub));
      // With one experiment shown, its plots are the overview's: only its table follows.
      if (expShown.size > 1) section.appendChild(plotsFor(points));
      const sweep = sweepPlots(points);
      const byMachine = machineTable(points);
      if (sweep || byMachine) section.appendChild(el('h3', {}, 'sweep'));
      if (sweep) section.appendChild(sweep);
      if (byMachine) {
        const wrap = el('div', {class: 'table-wrap'});
        wrap.appendChild(byMachine);
        section.appendChild(wrap);
      }
      section.appendChild(el('h3', {}, 'points'));
      const wrap = el('div', {class: 'table-wrap'});
      wrap.appendChild(pointsTable(points));
      section.appendChild(wrap);
      container.appendChild(section);
    });
  }

  render();
  document.body.setAttribute('data-ready', 'true');
})();
