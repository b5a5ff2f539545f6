// twinstage bridge protocol helpers for browsers (and node): the binary state frame decoder and
// the colour ramp the reference clients share. See docs/protocol.md.

const KINDS = { 1: 'delta', 2: 'snapshot' };
const REASONS = ['subscribe', 'resume', 'behind'];
const LATER_PART = 0x40, MORE_PARTS = 0x80;  // kind-byte flags of a message in parts (docs/protocol.md, "Big messages in parts")

// Decode a binary snapshot/delta (an ArrayBuffer). Arrays are views into the buffer
// (little-endian; the f64 arrays start 8-byte aligned at byte 48). `first`/`last`: which part of
// its message this frame is (both true for a whole message).
export function decodeBinary(buf) {
  const dv = new DataView(buf);
  const magic = String.fromCharCode(dv.getUint8(0), dv.getUint8(1), dv.getUint8(2), dv.getUint8(3));
  const kindByte = dv.getUint8(4);
  const kind = KINDS[kindByte & ~(LATER_PART | MORE_PARTS)];
  if (magic !== 'TWB1' || !kind) throw new Error(`not a twinstage binary frame (${magic})`);
  const n = dv.getUint32(8, true), m = dv.getUint32(12, true);
  if (buf.byteLength !== 48 + 13 * n + 29 * m) throw new Error(`binary frame of ${buf.byteLength} bytes, header says ${48 + 13 * n + 29 * m}`);
  let o = 48;
  const values = new Float64Array(buf, o, n); o += 8 * n;
  const vec3Values = new Float64Array(buf, o, 3 * m); o += 24 * m;
  const indices = new Uint32Array(buf, o, n); o += 4 * n;
  const vec3Indices = new Uint32Array(buf, o, m); o += 4 * m;
  const quality = new Uint8Array(buf, o, n); o += n;
  const vec3Quality = new Uint8Array(buf, o, m);
  return {
    kind, reason: kind === 'snapshot' ? REASONS[dv.getUint8(5)] : '', merged: dv.getUint16(6, true),
    first: !(kindByte & LATER_PART), last: !(kindByte & MORE_PARTS),
    seq: Number(dv.getBigUint64(16, true)), tick: Number(dv.getBigUint64(24, true)),
    simTime: dv.getFloat64(32, true), wallTime: dv.getFloat64(40, true),
    indices, values, quality, vec3Indices, vec3Values, vec3Quality,
  };
}

// Which part of its message a state message is: {first, last} (a decoded binary frame says so
// itself; JSON carries part/parts). Apply every part's entries as it arrives; a snapshot's first
// part clears what was known; the message (its seq) is complete only after the last part.
export function partOf(m) {
  if (m.first !== undefined) return { first: m.first, last: m.last };
  const part = m.part ?? 0, parts = m.parts ?? 1;
  return { first: part === 0, last: part >= parts - 1 };
}

// Blue → cyan → green → yellow → red over t in [0, 1] (the Foxglove dialect uses the same ramp).
export function ramp(t) {
  t = Math.min(1, Math.max(0, t));
  const stops = [[0, [0.1, 0.3, 0.9]], [0.25, [0.1, 0.8, 0.9]], [0.5, [0.2, 0.8, 0.2]], [0.75, [0.95, 0.85, 0.1]], [1, [0.9, 0.15, 0.1]]];
  for (let k = 1; k < stops.length; k++) {
    const [t1, c1] = stops[k], [t0, c0] = stops[k - 1];
    if (t <= t1) { const f = (t - t0) / (t1 - t0); return c0.map((a, i) => a + (c1[i] - a) * f); }
  }
  return stops[stops.length - 1][1];
}

// A unit as a person writes it (the hello carries pint spellings): degC → °C, g0 → g, m/s**2 → m/s²,
// percent → %, a dimensionless '1' → ''. Mirrors twinstage.units.format_unit.
const UNIT_DISPLAY = {
  degC: '°C', degF: '°F', degree_Celsius: '°C', degree_Fahrenheit: '°F', delta_degC: 'Δ°C', delta_degF: 'Δ°F', kelvin: 'K',
  g0: 'g', g_0: 'g', g_n: 'g', gravity: 'g', standard_gravity: 'g', percent: '%', deg: '°', degree: '°', ohm: 'Ω',
  micrometer: 'µm', um: 'µm', liter: 'L', litre: 'L',
};
const SUPERSCRIPT = { 0: '⁰', 1: '¹', 2: '²', 3: '³', 4: '⁴', 5: '⁵', 6: '⁶', 7: '⁷', 8: '⁸', 9: '⁹', '-': '⁻' };
export function formatUnit(unit) {
  const text = String(unit ?? '').trim();
  if (text === '' || text === '1' || text === 'dimensionless') return '';
  return text.replace(/[A-Za-z_][A-Za-z_0-9]*|(\*\*|\^)\s*-?\d+|\s*\*\s*/g, tok => {
    if (tok.startsWith('**') || tok.startsWith('^')) return tok.replace(/^(\*\*|\^)\s*/, '').split('').map(c => SUPERSCRIPT[c] ?? c).join('');
    if (tok.trim() === '*') return '·';
    return Object.hasOwn(UNIT_DISPLAY, tok) ? UNIT_DISPLAY[tok] : tok;
  });
}
