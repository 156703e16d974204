// Summarises a node --cpu-prof profile of benches/v8/exchange.js by function, naming the
// guest's functions from an engine built with its name section (an unstripped build of
// the same commit: `CARGO_PROFILE_RELEASE_STRIP=none`, otherwise as benches/engine-ab.sh):
//
//   node benches/v8/profile.js PROF.cpuprofile NAMED_ENGINE.wasm [self|incl] [regex] [top]
//
// `self` (default): time in each function itself; `incl`: including what it calls (guest
// functions only). Shares are of all samples, the host stand-in's JavaScript included.
'use strict';
const fs = require('fs');
const [, , profFile, engineFile, mode = 'self', filter = '', topArg = '40'] = process.argv;

// The name section's function names (subsection 1).
function functionNames(bytes) {
  const names = new Map();
  let i = 8;
  const leb = () => {
    let r = 0;
    let s = 0;
    for (;;) {
      const b = bytes[i++];
      r += (b & 0x7f) * 2 ** s;
      s += 7;
      if (b < 0x80) return r;
    }
  };
  while (i < bytes.length) {
    const id = bytes[i++];
    const size = leb();
    const end = i + size;
    if (id === 0) {
      const nameLen = leb();
      const name = Buffer.from(bytes.subarray(i, i + nameLen)).toString();
      i += nameLen;
      if (name === 'name') {
        while (i < end) {
          const sub = bytes[i++];
          const subSize = leb();
          const subEnd = i + subSize;
          if (sub === 1) {
            for (let n = leb(); n > 0; n -= 1) {
              const idx = leb();
              const l = leb();
              names.set(idx, Buffer.from(bytes.subarray(i, i + l)).toString());
              i += l;
            }
          }
          i = subEnd;
        }
      }
    }
    i = end;
  }
  return names;
}
const names = functionNames(new Uint8Array(fs.readFileSync(engineFile)));
const shorten = (s) => s.replace(/17h[0-9a-f]{16}E$/, '').replace(/^_ZN/, '').replace(/\d+(?=[A-Za-z_$])/g, ':').slice(0, 120);
const p = JSON.parse(fs.readFileSync(profFile));
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const parent = new Map();
p.nodes.forEach((n) => (n.children || []).forEach((c) => parent.set(c, n.id)));
const label = (n) => {
  const f = n.callFrame.functionName;
  const m = f.match(/wasm-function\[(\d+)\]/);
  if (m) return `guest ${shorten(names.get(Number(m[1])) || f)}`;
  // An artifact linked from a named engine keeps its name section: V8 names the function.
  if ((n.callFrame.url || '').startsWith('wasm://')) return `guest ${shorten(f)}`;
  return f || '(anonymous)';
};
const time = new Map();
let total = 0;
let guest = 0;
p.samples.forEach((id, k) => {
  const d = p.timeDeltas[k] || 0;
  total += d;
  const node = byId.get(id);
  if (label(node).startsWith('guest ')) guest += d;
  if (mode === 'self') {
    time.set(label(node), (time.get(label(node)) || 0) + d);
    return;
  }
  const seen = new Set();
  for (let n = id; n !== undefined; n = parent.get(n)) {
    const l = label(byId.get(n));
    if (l.startsWith('guest ') && !seen.has(l)) {
      seen.add(l);
      time.set(l, (time.get(l) || 0) + d);
    }
  }
});
console.log(`guest share of all samples: ${((100 * guest) / total).toFixed(1)} %`);
const re = new RegExp(filter);
[...time.entries()]
  .filter(([l]) => re.test(l))
  .sort((a, b) => b[1] - a[1])
  .slice(0, Number(topArg))
  .forEach(([l, t]) => console.log(`${((100 * t) / total).toFixed(1).padStart(5)} %  ${l}`));
