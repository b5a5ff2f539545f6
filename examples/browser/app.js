// twinstage browser client: loads the scene's GLB that the bridge announces in hello (three.js
// GLTFLoader; nodes carry extras.twinId = prim path), falls back to a box per asset without one,
// and colours/moves the twin's nodes from deltas (JSON or binary). Protocol: docs/protocol.md.
// State for scripts and tests lives in window.twin.
import * as THREE from './vendor/three.module.js';
import { adoptNode, loadSceneGlb } from './gltf.js';
import { decodeBinary, formatUnit, partOf, ramp } from './protocol.js';
import { createWhatIf } from './whatif.js';

const params = new URLSearchParams(location.search);
const wsUrl = params.get('ws') || `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/`;
const token = params.get('token');
const encoding = params.get('encoding') || 'binary';
const prefixes = params.getAll('prefix');
const maxRate = Number(params.get('maxRate') || 0);
const useGlb = params.get('glb') !== '0';  // ?glb=0: a box per asset even when the server has the scene's GLB

const twin = window.twin = {
  status: 'connecting', hello: null, role: '', seq: 0, tick: 0, simTime: 0, wallTime: 0,
  snapshots: 0, deltas: 0, gaps: 0, merged: 0, frames: 0,
  values: new Float64Array(0), vec3: new Float64Array(0), quality: new Uint8Array(0), known: new Uint8Array(0),
  ages: new Map(), reasons: new Map(), freshIdx: [],  // freshness messages: entry index -> age (s; Infinity: none yet) / reason
  meshes: new Map(), nodes: new Map(), glb: 'none', alarms: [], events: [], errors: [], structure: [], replies: new Map(), closeCode: null, closeReason: '',
  reason: '', notice: '',  // why the page is not (fully) connected: '', 'no-token', 'wrong-token', 'read-only', 'forbidden', 'unreachable', 'server-gone', 'closed'
  request, set: (prim, attribute, value, unit = '') => request({ type: 'set', prim, attribute, value, unit }),
  command: (command, steps = 0) => request({ type: 'command', command, steps, scenario: '' }),
  value, render: () => renderOnce(), pixelStats, partPixels, colorOf, formatUnit,
};
const whatif = twin.whatif = createWhatIf(twin);  // what-if panel + forecast chart (whatif.js)

// ---- why we are not connected: one line a person can act on ---------------------------
function notify(reason, text) {
  twin.reason = reason; twin.notice = text;
  const n = document.getElementById('notice');
  n.textContent = text; n.className = reason ? `notice ${reason}` : 'notice';
  n.hidden = !text;
}

// ---- three.js scene ---------------------------------------------------------------------
const view = document.getElementById('view');
const renderer = new THREE.WebGLRenderer({ antialias: false, preserveDrawingBuffer: true });
renderer.setPixelRatio(1);
view.appendChild(renderer.domElement);
const scene = new THREE.Scene();
scene.background = new THREE.Color(0x1b1e23);
const camera = new THREE.PerspectiveCamera(45, 1, 0.05, 5000);
const hemi = new THREE.HemisphereLight(0xffffff, 0x444455, 2.2);
scene.add(hemi);
const sun = new THREE.DirectionalLight(0xffffff, 1.5);
sun.position.set(3, -4, 6);
scene.add(sun);
const grey = new THREE.Color(0.6, 0.6, 0.62);

function resize() {
  const w = view.clientWidth || 640, h = view.clientHeight || 480;
  renderer.setSize(w, h, false);
  renderer.domElement.style.width = '100%';
  renderer.domElement.style.height = '100%';
  camera.aspect = w / h;
  camera.updateProjectionMatrix();
}
window.addEventListener('resize', resize);

function setColor(obj, rgb) { for (const m of obj.userData.materials) m.color.setRGB(rgb[0], rgb[1], rgb[2]); }
function colorOf(path) { const o = twin.meshes.get(path); return o ? '#' + o.userData.materials[0].color.getHexString() : undefined; }

function addPrim(p, twinPrim) {
  const size = p.size.some(v => v > 0) ? p.size : [0.2, 0.2, 0.2];
  const geom = new THREE.BoxGeometry(size[0], size[1], size[2]);
  const mat = new THREE.MeshStandardMaterial({ color: grey.clone(), roughness: 0.7, metalness: 0.1 });
  const mesh = new THREE.Mesh(geom, mat);
  mesh.position.set(p.position[0] + p.center[0], p.position[1] + p.center[1], p.position[2] + p.center[2]);
  mesh.userData = { prim: p, twinPrim, materials: [mat], box: true };
  scene.add(mesh);
  twin.meshes.set(p.path, mesh);
}

function buildScene(hello) {
  for (const m of twin.meshes.values()) m.removeFromParent();
  twin.meshes.clear(); twin.nodes.clear();
  if (glbRoot) { glbRoot.removeFromParent(); glbRoot = null; }
  if (hello.upAxis === 'Z') { camera.up.set(0, 0, 1); hemi.position.set(0, 0, 1); }
  hello.prims.forEach(p => addPrim(p, true));
  hello.added.forEach(p => addPrim(p, false));
  for (const path of hello.removed) removePrim(path);
  frame(Array.from(twin.meshes.values()));
  if (hello.glb && hello.glb.url && useGlb) loadGlb(hello);
  else twin.glb = 'none';
  const n = hello.attributes.length;
  twin.values = new Float64Array(n); twin.vec3 = new Float64Array(3 * n);
  twin.quality = new Uint8Array(n); twin.known = new Uint8Array(n);
  twin.moverOf = new Map();  // attribute index -> mesh moved by it (vec3 driving xformOp:translate)
  for (const p of hello.prims) {
    for (const i of p.attributes) {
      const a = hello.attributes[i];
      if (a.type === 'vec3' && a.drives.includes('xformOp:translate')) twin.moverOf.set(i, twin.meshes.get(p.path));
    }
  }
  document.getElementById('scene').textContent = hello.scene;
  buildTable(hello);
}

function frame(objects) {
  const box = new THREE.Box3();
  for (const m of objects) box.expandByObject(m);
  if (box.isEmpty()) return;
  const c = box.getCenter(new THREE.Vector3()), r = Math.max(box.getSize(new THREE.Vector3()).length() / 2, 1);
  if (camera.up.z === 1) camera.position.set(c.x + r * 0.9, c.y - r * 1.7, c.z + r * 1.0);
  else camera.position.set(c.x + r * 0.9, c.y + r * 1.0, c.z + r * 1.7);
  camera.lookAt(c);
}

// The scene's GLB (gltf.js): twin prims' nodes replace their boxes, the rest is scenery.
let glbRoot = null;
async function loadGlb(hello) {
  twin.glb = 'loading';
  const session = hello.session;
  let root, nodes;
  // a big scene's GLB may still be being built (hello.glb.status 'building'): the server answers 503 with
  // Retry-After until it is ready; boxes stand in meanwhile
  for (let tries = 0; ; tries++) {
    try { ({ root, nodes } = await loadSceneGlb(new URL(hello.glb.url, wsUrl.replace(/^ws/, 'http')).href, token)); break; } catch (e) {
      const res = e.response;
      if (res && res.status === 503 && tries < 720 && twin.hello && twin.hello.session === session) {
        twin.glb = 'waiting';
        await new Promise(r => setTimeout(r, 1000 * Math.min(60, Math.max(1, Number(res.headers.get('Retry-After')) || 5))));
        continue;
      }
      twin.glb = `failed: ${e.message || e}`;
      twin.errors.push(`scene GLB: ${e.message || e}`);
      return;
    }
  }
  if (!twin.hello || twin.hello.session !== session) return;  // a newer server answered meanwhile
  twin.nodes = nodes;
  for (const p of [...hello.prims, ...hello.added]) {
    const node = nodes.get(p.path), box = twin.meshes.get(p.path);
    if (!node || !box) continue;
    adoptNode(node, p, box.userData.twinPrim);
    node.position.copy(box.position).sub(new THREE.Vector3(p.center[0], p.center[1], p.center[2]));  // where deltas moved it so far
    box.removeFromParent();
    twin.meshes.set(p.path, node);
  }
  for (const path of hello.removed) for (const [k, o] of twin.nodes) if (k === path || k.startsWith(path + '/')) o.visible = false;
  scene.add(root);
  glbRoot = root;
  for (const [i, m] of twin.moverOf) if (m && twin.meshes.has(m.userData.prim.path)) twin.moverOf.set(i, twin.meshes.get(m.userData.prim.path));
  frame([root]);
  recolour();
  twin.glb = 'loaded';
}

function removePrim(path) {
  for (const [k, m] of twin.meshes) {
    if (k === path || k.startsWith(path + '/')) { m.removeFromParent(); twin.meshes.delete(k); }
  }
  for (const [k, o] of twin.nodes) if (k === path || k.startsWith(path + '/')) o.visible = false;
}

// ---- state ------------------------------------------------------------------------------
function value(prim, attribute) {
  const a = twin.hello && twin.hello.attributes.find(x => x.prim === prim && x.attribute === attribute);
  if (!a || !twin.known[a.index]) return undefined;
  if (a.type === 'vec3') return Array.from(twin.vec3.subarray(3 * a.index, 3 * a.index + 3));
  const v = twin.values[a.index];
  return a.type === 'bool' ? v !== 0 : v;
}

function apply(kind, f) {
  const { first, last } = partOf(f);  // a big message comes in parts: entries as they arrive, seq once complete
  if (kind === 'snapshot') {
    if (first) twin.known.fill(0);
    if (last) { twin.snapshots++; twin.status = 'live'; }
  } else if (first) {
    if (twin.seq && f.seq !== twin.seq + 1) twin.gaps++;
    twin.merged += Math.max(0, f.merged - 1);
  }
  if (kind !== 'snapshot' && last) twin.deltas++;
  for (let k = 0; k < f.indices.length; k++) {
    const i = f.indices[k];
    twin.values[i] = f.values[k]; twin.quality[i] = f.quality[k]; twin.known[i] = 1;
  }
  for (let k = 0; k < f.vec3Indices.length; k++) {
    const i = f.vec3Indices[k];
    for (let c = 0; c < 3; c++) twin.vec3[3 * i + c] = f.vec3Values[3 * k + c];
    twin.quality[i] = f.vec3Quality[k]; twin.known[i] = 1;
    const mesh = twin.moverOf.get(i);
    if (mesh) {  // a box sits at its bounds' centre, a GLB node at the prim's origin
      const p = mesh.userData.prim, c = mesh.userData.box ? p.center : [0, 0, 0];
      mesh.position.set(p.origin[0] + f.vec3Values[3 * k] + c[0], p.origin[1] + f.vec3Values[3 * k + 1] + c[1],
                        p.origin[2] + f.vec3Values[3 * k + 2] + c[2]);
    }
  }
  if (last) { twin.seq = f.seq; twin.tick = f.tick; twin.simTime = f.simTime; twin.wallTime = f.wallTime; }
  recolour();
  whatif.onState();
  dirtyTable = true;
}

function recolour() {
  const attrs = twin.hello.attributes;
  for (const mesh of twin.meshes.values()) {
    const p = mesh.userData.prim;
    if (!mesh.userData.twinPrim || p.colorBy < 0 || !twin.known[p.colorBy]) continue;
    const a = attrs[p.colorBy], q = twin.quality[p.colorBy];
    let rgb;
    if (q & 16) rgb = [0.9, 0.1, 0.9];
    else if (q & 2) rgb = [1, 0, 0];
    else rgb = ramp(a.max > a.min ? (twin.values[p.colorBy] - a.min) / (a.max - a.min) : 0.5);
    setColor(mesh, rgb);
  }
}

// ---- side panel -------------------------------------------------------------------------
let selected = null, dirtyTable = false;
function fmt(v) { return Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(3) : v.toFixed(3); }
function buildTable(hello) {
  const t = document.getElementById('prims');
  t.innerHTML = '';
  for (const p of hello.prims) {
    const tr = t.insertRow();
    tr.dataset.path = p.path;
    tr.insertCell().textContent = p.path.split('/').pop();
    const v = tr.insertCell(); v.className = 'v';
    tr.onclick = () => { selected = p; dirtyTable = true; whatif.select(p); };
  }
}
function updateTable() {
  if (!dirtyTable || !twin.hello) return;
  dirtyTable = false;
  const attrs = twin.hello.attributes;
  for (const tr of document.getElementById('prims').rows) {
    const p = twin.meshes.get(tr.dataset.path)?.userData.prim;
    if (!p || p.colorBy < 0 || !twin.known[p.colorBy]) continue;
    const a = attrs[p.colorBy];
    tr.cells[1].textContent = `${a.attribute} ${fmt(twin.values[p.colorBy])} ${formatUnit(a.unit)}`.trimEnd();
    const why = p.attributes.map(i => twin.reasons.get(i)).filter(Boolean);
    if (why.length) tr.cells[1].textContent += ' ⚠';
    tr.title = why.join('\n');
    tr.className = (twin.quality[p.colorBy] & 2 ? 'oor' : '') + (selected === p ? ' sel' : '');
  }
  const at = document.getElementById('attrs');
  at.innerHTML = '';
  if (selected) {
    for (const i of selected.attributes) {
      const a = attrs[i], tr = at.insertRow();
      tr.insertCell().textContent = a.attribute;
      const v = value(a.prim, a.attribute);
      tr.insertCell().textContent = v === undefined ? '–' : Array.isArray(v) ? v.map(fmt).join(', ') : typeof v === 'boolean' ? String(v) : fmt(v);
      tr.cells[1].className = 'v';
      tr.insertCell().textContent = formatUnit(a.unit);
      if (twin.ages.has(i)) {  // a telemetry-fed entry: age of its last good sample, and why it is flagged
        const age = twin.ages.get(i);
        tr.insertCell().textContent = age === Infinity ? 'no data' : `${age.toFixed(1)} s ago`;
        tr.title = twin.reasons.get(i) || 'good';
        if (twin.reasons.has(i)) tr.style.color = '#999';  // greyed: flagged (stale, missing, ...)
      }
    }
  }
  if (twin.status === 'closed') return;  // the notice says why; keep the last figures out of the way
  document.getElementById('status').textContent =
    `${twin.status} · ${twin.role || 'no role'}${twin.hello.paused ? ' · paused' : ''}\ntick ${twin.tick} · t=${twin.simTime.toFixed(1)} s · seq ${twin.seq}\n` +
    `${twin.snapshots} snapshot(s), ${twin.deltas} deltas, ${twin.gaps} gaps`;
}

// ---- connection -------------------------------------------------------------------------
let ws, ids = 0;
function request(msg) {
  const id = `js-${++ids}`;
  return new Promise((resolve, reject) => {
    twin.replies.set(id, { resolve, reject });
    ws.send(JSON.stringify({ ...msg, id }));
  });
}

function onMessage(ev) {
  if (ev.data instanceof ArrayBuffer) {
    const f = decodeBinary(ev.data);
    apply(f.kind, f);
    return;
  }
  const m = JSON.parse(ev.data);
  switch (m.type) {
    case 'hello': {
      const fresh = !twin.hello || twin.hello.session !== m.session;
      twin.hello = m; twin.role = m.role;
      if (fresh) buildScene(m);
      const ok = m.role === 'operator' || m.role === 'admin';
      for (const b of ['pause', 'resume', 'step', 'setButton']) document.getElementById(b).disabled = !ok;
      buildSetForm(m);
      whatif.onHello(m, ok);
      if (token && !m.user) break;  // our auth message is still on its way: wait for the hello it answers with
      retries = 0;
      if (ok) notify('', '');
      else notify('read-only', `Connected as ${m.role} (read-only): setting values, pause and step need an operator token — ` +
                  'open the operator URL twinstage printed.');
      twin.status = 'subscribing';
      request({ type: 'subscribe', prefixes, attributes: [], encoding, maxRate }).catch(e => twin.errors.push(String(e)));
      break;
    }
    case 'snapshot': case 'delta': apply(m.type, m); break;
    case 'ack': case 'error': {
      const r = twin.replies.get(m.id);
      if (r) { twin.replies.delete(m.id); m.type === 'ack' ? r.resolve(m) : r.reject(new Error(`${m.code}: ${m.message}`)); }
      else if (m.type === 'error') twin.errors.push(m);
      if (m.type === 'error' && m.code === 'unauthorized') authRefused = true;
      if (m.type === 'error' && m.code === 'forbidden') notify('forbidden', `Refused: ${m.message}. This page's token has the role ${twin.role}.`);
      if (m.type === 'ack' && (m.of === 'pause' || m.of === 'resume')) twin.hello.paused = m.paused;
      break;
    }
    case 'alarm': {
      twin.alarms.push(m);
      const d = document.createElement('div');
      d.textContent = `${m.active ? '▲' : '▽'} t=${m.simTime.toFixed(1)} ${m.message}`;
      document.getElementById('alarms').prepend(d);
      break;
    }
    case 'freshness': {  // ages of fed entries; indices [] = those of the last listing; reasons only when they change
      if (m.indices.length || !m.ages.length) twin.freshIdx = m.indices;
      twin.ages = new Map(twin.freshIdx.map((i, k) => [i, m.ages[k] < 0 ? Infinity : m.ages[k]]));
      for (const r of m.reasons) r.text ? twin.reasons.set(r.index, r.text) : twin.reasons.delete(r.index);
      break;
    }
    case 'event': twin.events.push(m); break;
    case 'forecast': whatif.onForecast(m); break;
    case 'structure':
      twin.structure.push(m);
      m.added.forEach(p => addPrim(p, false));
      m.removed.forEach(removePrim);
      break;
  }
  dirtyTable = true;
}

// Close codes (docs/protocol.md): 4401 no/wrong token, 1008 policy, 1001 server shutting down; 1006 is
// all a browser learns of a refused handshake (HTTP 401/403) or a vanished server.
let retries = 0, authRefused = false;
const RETRY_S = 3;
function onClose(ev, opened) {
  twin.status = 'closed'; twin.closeCode = ev.code; twin.closeReason = ev.reason || '';
  for (const r of twin.replies.values()) r.reject(new Error(`not connected (close code ${ev.code})`));
  twin.replies.clear();
  for (const b of ['pause', 'resume', 'step', 'setButton']) document.getElementById(b).disabled = true;
  whatif.enable(false, 'not connected');
  let retry = true;
  if (ev.code === 4401 || authRefused) {
    retry = false;
    if (!token) notify('no-token', 'Not connected: this server needs a token. Open the URL twinstage printed when it started ' +
                       '(it ends in ?token=…), or add ?token=YOUR-SECRET to this page\'s address.');
    else notify('wrong-token', 'Not connected: the server refused the token in this page\'s address (wrong, or from an earlier ' +
                'start — twinstage makes new tokens each time it starts). Use the URL it printed this time.');
  } else if (ev.code === 1008 || ev.code === 1009) {
    retry = false;
    notify('closed', `Disconnected by the server: ${ev.reason || 'policy violation'} (code ${ev.code}). Reload the page to reconnect.`);
  } else if (!opened && !twin.hello) {
    notify('unreachable', `Not connected: nothing answers at ${wsUrl} — is twinstage serve (or make demo-live) running? ` +
           `A page from another site is also refused unless the server allows its origin (--origin). Retrying every ${RETRY_S} s…`);
  } else {
    notify('server-gone', `The server is gone: the connection closed (code ${ev.code}${ev.reason ? ', ' + ev.reason : ''}). ` +
           `Retrying every ${RETRY_S} s…`);
  }
  document.getElementById('status').textContent = `not connected (close code ${ev.code})`;
  if (retry) { retries++; setTimeout(connect, RETRY_S * 1000); }
}

function connect() {
  let opened = false;
  authRefused = false;
  const url = new URL(wsUrl);  // this page reads the rows hello; a big scene's is big, and browsers take any size
  if (!url.searchParams.has('hello')) url.searchParams.set('hello', 'rows');
  ws = new WebSocket(url.href, ['twinstage.v1']);
  ws.binaryType = 'arraybuffer';
  ws.onopen = () => {
    opened = true;
    twin.status = 'open';
    if (token) ws.send(JSON.stringify({ type: 'auth', token }));  // browsers cannot set headers: first message
    else document.getElementById('status').textContent = 'connected without a token: waiting to see whether the server lets this page in…';
  };
  ws.onmessage = onMessage;
  ws.onclose = ev => onClose(ev, opened);
}

// ---- set: any input/parameter attribute, with an optional unit ("0.4", "77 degF") ----------
function buildSetForm(hello) {
  const sel = document.getElementById('setWhat');
  const keep = sel.value;
  sel.innerHTML = '';
  for (const a of hello.attributes) {
    if (a.type === 'vec3' || !(a.role === 'input' || a.role === 'parameter')) continue;
    const o = document.createElement('option');
    o.value = `${a.prim}|${a.attribute}`;
    const u = formatUnit(a.unit);
    o.textContent = `${a.prim.split('/').pop()}.${a.attribute}${u ? ` [${u}]` : ''}`;
    sel.appendChild(o);
  }
  if (keep) sel.value = keep;
}
function parseValue(text) {
  const t = text.trim();
  if (t === 'true' || t === 'false') return [t === 'true', ''];
  const m = /^([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*)$/.exec(t);
  if (!m) throw new Error(`not a number: ${JSON.stringify(text)} (e.g. 0.4 or 77 degF)`);
  return [Number(m[1]), m[2]];
}
document.getElementById('setForm').onsubmit = ev => {
  ev.preventDefault();
  const out = document.getElementById('setResult');
  const [prim, attribute] = document.getElementById('setWhat').value.split('|');
  let value, unit;
  try { [value, unit] = parseValue(document.getElementById('setValue').value); } catch (e) { out.textContent = String(e.message); return; }
  out.textContent = '…';
  twin.set(prim, attribute, value, unit).then(a => { out.textContent = `set at tick ${a.tick}`; },
                                              e => { out.textContent = String(e.message); twin.errors.push(String(e)); });
};

for (const b of ['pause', 'resume']) document.getElementById(b).onclick = () => twin.command(b).catch(e => twin.errors.push(String(e)));
document.getElementById('step').onclick = () => twin.command('step', 1).catch(e => twin.errors.push(String(e)));

// ---- render loop ------------------------------------------------------------------------
function renderOnce() { renderer.render(scene, camera); twin.frames++; }
function pixelStats() {
  renderOnce();
  const gl = renderer.getContext(), w = gl.drawingBufferWidth, h = gl.drawingBufferHeight;
  const px = new Uint8Array(w * h * 4);
  gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, px);
  let lit = 0;
  const bg = [0x1b, 0x1e, 0x23];
  for (let i = 0; i < px.length; i += 4) if (Math.abs(px[i] - bg[0]) + Math.abs(px[i + 1] - bg[1]) + Math.abs(px[i + 2] - bg[2]) > 24) lit++;
  return { width: w, height: h, lit };
}
// Lit pixels of the parts whose id (twinId, or usdPath for scenery) passes ``pred`` (a prefix
// string or a function), everything else hidden for one render: is this part on screen?
function partPixels(pred) {
  const test = typeof pred === 'function' ? pred : id => id === pred || id.startsWith(pred + '/');
  const hidden = [];
  const keep = new Set();
  for (const [id, o] of twin.nodes) if (test(id)) o.traverse(x => keep.add(x));
  for (const [id, o] of twin.meshes) if (test(id)) o.traverse(x => keep.add(x));
  scene.traverse(o => { if (o.isMesh && o.visible && !keep.has(o)) { hidden.push(o); } });
  for (const o of hidden) o.visible = false;
  try { return pixelStats(); } finally { for (const o of hidden) o.visible = true; }
}
function loop() { updateTable(); renderOnce(); requestAnimationFrame(loop); }

resize();
connect();
requestAnimationFrame(loop);
