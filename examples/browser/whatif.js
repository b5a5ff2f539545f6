// What-if from now (docs/protocol.md, `whatif` → `forecast`s → `ack`): the operator picks an attribute
// to predict and, optionally, a change ("set Valve2.opening to 0.2, 0.5, 0.8 in 2 s"); the server forks
// the running twin, predicts one future per value and sends the band (min / p10 / mean / p90 / max per
// predicted tick). The chart (SVG) shows the attribute's live trace and, ghosted after "now", the
// band: min–max light, p10–p90 darker, the mean dashed. The live trace keeps running into the band,
// so what happened can be read against what was predicted. Viewer tokens see the control disabled,
// with the reason. State for scripts and tests: window.twin.whatif.
import { formatUnit } from './protocol.js';

const SVG = 'http://www.w3.org/2000/svg';
const W = 268, H = 150, PAD = { l: 44, r: 6, t: 16, b: 18 };
const TRACE_MAX = 4000;  // live samples kept for the charted attribute
const BAND = '#8fb8ff', TRACE = '#e8e8f0';

export function createWhatIf(twin) {
  const $ = id => document.getElementById(id);
  const state = {
    status: 'idle', key: '', reason: 'not connected', trace: [], forecast: null, ack: null, error: '',
    forecasts: new Map(),  // request id -> { key -> forecast message } (forecasts arrive before their ack)
    scale: null, run, draw, setKey,
  };
  let pending = false, charted = null;  // charted: the hello's AttributeInfo of state.key (looked up once, not per frame)

  function numeric(a) { return a.type === 'float' || a.type === 'int'; }

  // ---- the form ---------------------------------------------------------------------------
  function onHello(h, canRun) {
    const attr = $('wfAttr'), set = $('wfSet');
    const keepAttr = attr.value, keepSet = set.value;
    attr.innerHTML = ''; set.innerHTML = '';
    const none = document.createElement('option');
    none.value = ''; none.textContent = '(no change)';
    set.appendChild(none);
    for (const a of h.attributes) {
      if (!numeric(a)) continue;
      const u = formatUnit(a.unit), label = `${a.prim.split('/').pop()}.${a.attribute}${u ? ` [${u}]` : ''}`;
      const o = document.createElement('option');
      o.value = `${a.prim}.${a.attribute}`; o.textContent = label;
      attr.appendChild(o);
      if (a.role === 'input' || a.role === 'parameter') {
        const s = document.createElement('option');
        s.value = `${a.prim}.${a.attribute}`; s.textContent = label;
        set.appendChild(s);
      }
    }
    if (keepAttr) attr.value = keepAttr;
    if (keepSet) set.value = keepSet;
    if (state.key) attr.value = state.key;  // nothing is charted (or traced) until an asset or attribute is picked
    charted = state.key ? attrOf(state.key) : null;
    enable(canRun, canRun ? '' : `what-if needs an operator token: this page's token has the role ${h.role || 'viewer'}`);
  }

  function enable(ok, reason) {
    state.reason = ok ? '' : reason;
    $('wfRun').disabled = !ok || state.status === 'running';
    $('wfRun').title = state.reason;
    $('wfReason').textContent = state.reason;
    $('wfReason').hidden = !state.reason;
  }

  function select(prim) {  // a clicked asset: chart the attribute it is coloured by (or its first numeric one)
    const attrs = twin.hello.attributes;
    const a = prim.colorBy >= 0 && numeric(attrs[prim.colorBy]) ? attrs[prim.colorBy] : prim.attributes.map(i => attrs[i]).find(numeric);
    if (a) setKey(`${a.prim}.${a.attribute}`);
  }

  function setKey(key) {
    if (key === state.key) return;
    state.key = key; state.trace = []; charted = attrOf(key);
    if ($('wfAttr').value !== key) $('wfAttr').value = key;
    if (state.forecast && `${state.forecast.prim}.${state.forecast.attribute}` !== key) state.forecast = null;
    schedule();
  }

  function attrOf(key) {
    const dot = key.lastIndexOf('.');
    const prim = key.slice(0, dot), attribute = key.slice(dot + 1);
    return (twin.hello && twin.hello.attributes.find(x => x.prim === prim && x.attribute === attribute)) || null;
  }

  // ---- live trace: one sample per state frame -------------------------------------------
  function onState() {
    const a = charted;
    if (!a || !twin.known[a.index]) return;
    const last = state.trace[state.trace.length - 1];
    if (last && last[0] === twin.simTime) last[1] = twin.values[a.index];
    else state.trace.push([twin.simTime, twin.values[a.index]]);
    if (state.trace.length > TRACE_MAX) state.trace.splice(0, state.trace.length - TRACE_MAX);
    schedule();
  }

  function onForecast(m) {
    if (!state.forecasts.has(m.id)) state.forecasts.set(m.id, new Map());
    state.forecasts.get(m.id).set(`${m.prim}.${m.attribute}`, m);
  }

  // ---- the request ----------------------------------------------------------------------
  function parseValues(text) {  // "0.2, 0.5, 0.8" or "70 80 degF" -> [[0.2, 0.5, 0.8], unit]
    const t = text.trim();
    if (!t) return [[], ''];
    const m = /^((?:[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?[\s,;]*)+)(.*)$/.exec(t);
    if (!m) throw new Error(`values: not numbers: ${JSON.stringify(text)} (e.g. 0.2, 0.5, 0.8 or 70 80 degF)`);
    return [m[1].split(/[\s,;]+/).filter(Boolean).map(Number), m[2].trim()];
  }

  // opts: { key, set: 'Prim.attr' | '', values: [..], unit, at (s from now), horizon (s) }
  async function run(opts) {
    const key = opts.key || state.key;
    const events = [], grid = [];
    if (opts.set && opts.values.length) {
      events.push({ name: 'whatif', at: opts.at, set: opts.set, value: opts.values[0], ...(opts.unit ? { unit: opts.unit } : {}) });
      if (opts.values.length > 1) grid.push({ key: 'events.whatif.value', values: opts.values });
    }
    setKey(key);
    state.status = 'running'; state.error = ''; state.ack = null;
    enable(!state.reason, state.reason);
    $('wfResult').textContent = 'predicting…';
    try {
      const ack = await twin.request({ type: 'whatif', events, horizon: opts.horizon, grid, attributes: [key] });
      const got = state.forecasts.get(ack.id);
      state.forecasts.delete(ack.id);
      state.ack = ack; state.forecast = got && got.get(key) || null; state.status = 'done';
      $('wfResult').textContent = ack.detail;
    } catch (e) {
      state.status = 'error'; state.error = String(e.message || e);
      $('wfResult').textContent = state.error;
      twin.errors.push(state.error);
    } finally {
      enable(!state.reason, state.reason);
      schedule();
    }
    return state;
  }

  $('wfAttr').onchange = () => setKey($('wfAttr').value);
  $('wfForm').onsubmit = ev => {
    ev.preventDefault();
    let values, unit;
    try { [values, unit] = parseValues($('wfValues').value); } catch (e) { $('wfResult').textContent = e.message; return; }
    const at = Number($('wfAt').value || 0), horizon = Number($('wfHorizon').value);
    if (!(horizon > 0)) { $('wfResult').textContent = 'horizon: a number of seconds > 0'; return; }
    if (!(at >= 0)) { $('wfResult').textContent = 'at: seconds from now, >= 0'; return; }
    run({ key: $('wfAttr').value, set: $('wfSet').value, values, unit, at, horizon });
  };

  // ---- the chart --------------------------------------------------------------------------
  function schedule() {  // at most 5 redraws a second: the chart need not keep the 3D view's frame rate
    if (pending) return;
    pending = true;
    setTimeout(() => { pending = false; draw(); }, 200);
  }

  function el(tag, attrs, parent) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    parent.appendChild(e);
    return e;
  }

  function draw() {
    const svg = $('wfChart');
    svg.innerHTML = '';
    const a = charted;
    const f = state.forecast;
    const tr = state.trace;
    if (!a || (!tr.length && !f)) { state.scale = null; return; }
    // x: history up to now, then the forecast's horizon
    const now = tr.length ? tr[tr.length - 1][0] : twin.simTime;
    const end = f ? Math.max(now, f.startSimTime + f.times[f.times.length - 1]) : now;
    const span = f ? f.times[f.times.length - 1] : 20;
    const first = tr.length ? tr[0][0] : now;  // as much history as future (20 s at least), as far as there is one
    const t0 = Math.min(f ? f.startSimTime : now, Math.max(first, Math.min(f ? f.startSimTime : now, now) - Math.max(20, span)));
    const seen = tr.filter(p => p[0] >= t0);
    let lo = Infinity, hi = -Infinity;
    for (const p of seen) { lo = Math.min(lo, p[1]); hi = Math.max(hi, p[1]); }
    if (f) for (let i = 0; i < f.times.length; i++) { lo = Math.min(lo, f.min[i]); hi = Math.max(hi, f.max[i]); }
    if (hi - lo < 1e-9) { const c = lo; lo = c - Math.max(Math.abs(c) * 0.05, 1e-3); hi = c + Math.max(Math.abs(c) * 0.05, 1e-3); }
    const pad = (hi - lo) * 0.08; lo -= pad; hi += pad;
    const x0 = PAD.l, x1 = W - PAD.r, y0 = H - PAD.b, y1 = PAD.t;
    const t1 = end > t0 ? end : t0 + 1;
    const X = t => x0 + (t - t0) / (t1 - t0) * (x1 - x0), Y = v => y0 + (v - lo) / (hi - lo) * (y1 - y0);
    state.scale = { x0, x1, y0, y1, t0, t1, v0: lo, v1: hi };
    const r = n => n.toFixed(2);
    el('rect', { x: x0, y: y1, width: x1 - x0, height: y0 - y1, fill: '#1b1e23', stroke: '#3a404a' }, svg);
    const u = formatUnit(a.unit);
    el('text', { x: x0, y: 11, fill: '#9ab', 'font-size': 11 }, svg).textContent = `${a.prim.split('/').pop()}.${a.attribute}${u ? ` [${u}]` : ''}`;
    const fmt = v => Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(2) : v.toFixed(2);
    el('text', { x: x0 - 3, y: y1 + 9, fill: '#889', 'font-size': 10, 'text-anchor': 'end' }, svg).textContent = fmt(hi);
    el('text', { x: x0 - 3, y: y0, fill: '#889', 'font-size': 10, 'text-anchor': 'end' }, svg).textContent = fmt(lo);
    el('text', { x: x0, y: H - 4, fill: '#889', 'font-size': 10 }, svg).textContent = `t=${t0.toFixed(0)} s`;
    el('text', { x: x1, y: H - 4, fill: '#889', 'font-size': 10, 'text-anchor': 'end' }, svg).textContent = `${t1.toFixed(0)} s`;
    if (f) {
      const ts = f.times.map(t => f.startSimTime + t);
      const area = (top, bottom) => 'M' + ts.map((t, i) => `${r(X(t))},${r(Y(top[i]))}`).join('L') +
        'L' + ts.map((t, i) => `${r(X(t))},${r(Y(bottom[i]))}`).reverse().join('L') + 'Z';
      el('path', { id: 'wf-range', d: area(f.max, f.min), fill: BAND, 'fill-opacity': 0.22, stroke: 'none' }, svg);
      el('path', { id: 'wf-spread', d: area(f.p90, f.p10), fill: BAND, 'fill-opacity': 0.38, stroke: 'none' }, svg);
      el('path', { id: 'wf-mean', d: 'M' + ts.map((t, i) => `${r(X(t))},${r(Y(f.mean[i]))}`).join('L'), fill: 'none', stroke: BAND,
                   'stroke-opacity': 0.9, 'stroke-width': 1.5, 'stroke-dasharray': '4 3' }, svg);
      const xs = X(f.startSimTime);
      el('line', { id: 'wf-start', x1: xs, x2: xs, y1, y2: y0, stroke: BAND, 'stroke-opacity': 0.7, 'stroke-dasharray': '2 2' }, svg);
      el('text', { x: xs + 2, y: y1 + 9, fill: BAND, 'font-size': 10 }, svg).textContent = `${f.runs} futures`;
    }
    if (seen.length) {
      el('polyline', { id: 'wf-trace', points: seen.map(p => `${r(X(p[0]))},${r(Y(p[1]))}`).join(' '), fill: 'none', stroke: TRACE,
                       'stroke-width': 1.5 }, svg);
      el('line', { id: 'wf-now', x1: X(now), x2: X(now), y1, y2: y0, stroke: '#ffd27a', 'stroke-opacity': 0.8 }, svg);
    }
  }

  return Object.assign(state, { onHello, onState, onForecast, enable, select });
}
