/* ckx dashboard: renders the embedded experiment data as SVG plots and tables; filters by tag. */
(function () {
  'use strict';

  const SVGNS = 'http://www.w3.org/2000/svg';
  const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf',
                   '#7f7f7f', '#bcbd22'];
  const PERCENTILES = ['p50', 'p90', 'p95', 'p97', 'p99', 'p99.9'];
  const data = JSON.parse(document.getElementById('ckx-data').textContent);
  const active = new Set();

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
    return true;
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
    if (active.size) {
      const clear = el('button', {type: 'button', class: 'clear', id: 'clear-filters'}, 'clear');
      clear.addEventListener('click', () => { active.clear(); render(); });
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
