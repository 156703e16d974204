// Drives a writ artifact through the proxy-wasm ABI in node's V8 (the engine family
// Envoy runs wasm on), the bench's 4 KB chat request with PII and a reply that echoes its
// placeholders, so the guest can be profiled by function, which Envoy's V8 does not allow:
//
//   node benches/v8/exchange.js ARTIFACT.wasm [N]                       # µs per exchange
//   node --cpu-prof --cpu-prof-dir=PROF benches/v8/exchange.js ARTIFACT.wasm 2000
//   node benches/v8/profile.js PROF/*.cpuprofile NAMED_ENGINE.wasm [self|incl] [filter]
//
// The host side is a minimal in-memory stand-in (shared data with CAS, headers, buffers,
// the clock); its own JavaScript shows up in the profile under its own names. Absolute
// times include that stand-in and node's garbage collector: compare artifacts within one
// run, and read the guest's split from the profile.
'use strict';
const fs = require('fs');
const [, , file, nArg] = process.argv;
if (!file) {
  console.error('usage: node exchange.js ARTIFACT.wasm [N]');
  process.exit(2);
}
const N = Number(nArg || 2000);
const mod = new WebAssembly.Module(fs.readFileSync(file));
let inst;
let mem;
const u8 = () => new Uint8Array(mem.buffer);
const dv = () => new DataView(mem.buffer);
const enc = new TextEncoder();
const dec = new TextDecoder();
const OK = 0;
const NOT_FOUND = 1;
const CAS_MISMATCH = 8;

function give(bytes, ptrPtr, sizePtr) {
  const p = inst.exports.malloc(bytes.length || 1);
  u8().set(bytes, p);
  dv().setUint32(ptrPtr, p, true);
  dv().setUint32(sizePtr, bytes.length, true);
  return OK;
}
const str = (p, l) => dec.decode(u8().subarray(p, p + l));
function serializeMap(pairs) {
  const parts = pairs.map(([k, v]) => [enc.encode(k), enc.encode(v)]);
  const size = 4 + parts.reduce((s, [k, v]) => s + 8 + k.length + v.length + 2, 0);
  const out = new Uint8Array(size);
  const d = new DataView(out.buffer);
  d.setUint32(0, parts.length, true);
  let o = 4;
  for (const [k, v] of parts) {
    d.setUint32(o, k.length, true);
    d.setUint32(o + 4, v.length, true);
    o += 8;
  }
  for (const [k, v] of parts) {
    out.set(k, o);
    o += k.length + 1;
    out.set(v, o);
    o += v.length + 1;
  }
  return out;
}
// The request of benches/src/payload.rs (`chat_request(false)`).
function chatRequest() {
  const head = '{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are the support assistant. Answer briefly and politely."},{"role":"user","content":"';
  const tail = '"}],"max_tokens":512,"temperature":0.2,"stream":false}';
  const pii = ' Please reply to jane.doe@example.com about the refund to card 4111 1111 1111 1111, and confirm the IBAN DE89 3704 0044 0532 0130 00 is still valid. Copy bob.smith@example.org.';
  const prose = 'The customer wrote in about an invoice that was charged twice this month. They attached the statement and asked us to check the ledger entries from the second week, and to explain the pending adjustment on their account. ';
  const room = 4096 - head.length - tail.length - pii.length;
  let user = '';
  while (user.length + prose.length <= room) user += prose;
  while (user.length < room) user += '.';
  return enc.encode(head + user + pii + tail);
}
const requestBody = chatRequest();
const config = enc.encode('{}');
let requestHeaders;
let replyHeaders;
let requestBuffer;
let replyBuffer;
const shared = new Map();
let casCounter = 1;
let metricId = 1;
let localReplies = 0;
const headerMap = (t) => (t === 0 ? requestHeaders : t === 2 ? replyHeaders : []);
const env = {
  proxy_log: () => OK,
  proxy_get_buffer_bytes: (t, start, len, pp, sp) => {
    const b = { 0: requestBuffer, 1: replyBuffer, 6: new Uint8Array(0), 7: config }[t];
    return b ? give(b.subarray(start, start + len), pp, sp) : NOT_FOUND;
  },
  proxy_set_buffer_bytes: (t, start, len, p, l) => {
    const bytes = u8().slice(p, p + l);
    if (t === 0) requestBuffer = bytes;
    else if (t === 1) replyBuffer = bytes;
    return OK;
  },
  proxy_get_header_map_pairs: (t, pp, sp) => give(serializeMap(headerMap(t)), pp, sp),
  proxy_get_header_map_value: (t, kp, kl, pp, sp) => {
    const k = str(kp, kl);
    const e = headerMap(t).find((x) => x[0] === k);
    return e ? give(enc.encode(e[1]), pp, sp) : NOT_FOUND;
  },
  proxy_replace_header_map_value: (t, kp, kl, vp, vl) => {
    const m = headerMap(t);
    const k = str(kp, kl);
    const i = m.findIndex((x) => x[0] === k);
    if (i >= 0) m[i] = [k, str(vp, vl)];
    else m.push([k, str(vp, vl)]);
    return OK;
  },
  proxy_remove_header_map_value: (t, kp, kl) => {
    const m = headerMap(t);
    const i = m.findIndex((x) => x[0] === str(kp, kl));
    if (i >= 0) m.splice(i, 1);
    return OK;
  },
  proxy_get_property: () => NOT_FOUND,
  proxy_get_current_time_nanoseconds: (p) => {
    dv().setBigUint64(p, BigInt(Date.now()) * 1000000n, true);
    return OK;
  },
  proxy_get_shared_data: (kp, kl, pp, sp, cp) => {
    const e = shared.get(str(kp, kl));
    if (!e) return NOT_FOUND;
    give(e.value, pp, sp);
    dv().setUint32(cp, e.cas, true);
    return OK;
  },
  proxy_set_shared_data: (kp, kl, vp, vl, cas) => {
    const k = str(kp, kl);
    const e = shared.get(k);
    if (cas !== 0 && e && e.cas !== cas) return CAS_MISMATCH;
    shared.set(k, { value: u8().slice(vp, vp + vl), cas: ++casCounter });
    return OK;
  },
  proxy_define_metric: (t, np, nl, ip) => {
    dv().setUint32(ip, metricId++, true);
    return OK;
  },
  proxy_send_local_response: () => {
    localReplies += 1;
    return OK;
  },
};
// Every other import answers OK.
inst = new WebAssembly.Instance(mod, { env: new Proxy(env, { get: (o, k) => o[k] || (() => OK) }) });
mem = inst.exports.memory;
const x = inst.exports;
if (x._initialize) x._initialize();
x.proxy_on_context_create(1, 0);
if (!x.proxy_on_vm_start(1, 0) || !x.proxy_on_configure(1, config.length)) {
  throw new Error('the artifact refused to start');
}
function exchange(id) {
  requestHeaders = [
    [':method', 'POST'], [':path', '/v1/chat/completions'], [':authority', 'localhost'],
    [':scheme', 'http'], ['content-type', 'application/json'], ['content-length', '4096'],
    ['x-workflow', 'support-assistant'], ['x-jwt-team', 'team-billing'],
    ['x-jwt-sub', 'agent-17'], ['x-forwarded-proto', 'http'],
    ['x-request-id', `b1c7e9a2-0000-4000-8000-${String(id).padStart(12, '0')}`],
  ];
  requestBuffer = requestBody;
  x.proxy_on_context_create(id, 1);
  x.proxy_on_request_headers(id, requestHeaders.length, 0);
  x.proxy_on_request_body(id, requestBuffer.length, 1);
  // The bench upstream's answer: the tail of the forwarded prompt, placeholders included.
  const sent = dec.decode(requestBuffer);
  const end = sent.lastIndexOf('"}],');
  const content = sent.slice(Math.max(0, end - 200), end);
  replyBuffer = enc.encode(JSON.stringify({
    id: 'c', object: 'chat.completion', model: 'gpt-4o-mini',
    choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }],
    usage: { prompt_tokens: 1000, completion_tokens: 50, total_tokens: 1050 },
  }));
  replyHeaders = [
    [':status', '200'], ['content-type', 'application/json'],
    ['content-length', String(replyBuffer.length)], ['x-model-confidence', '0.93'],
  ];
  x.proxy_on_response_headers(id, replyHeaders.length, 0);
  x.proxy_on_response_body(id, replyBuffer.length, 1);
  x.proxy_on_log(id);
  x.proxy_on_done(id);
  x.proxy_on_delete(id);
  return dec.decode(replyBuffer);
}
const first = exchange(2);
if (!first.includes('jane.doe@example.com')) {
  console.error(`the reply was not restored: ${first}`);
  process.exit(1);
}
for (let i = 0; i < 500; i += 1) exchange(3 + i);
// CPU time (user + system) as well as wall time: on a shared machine the CPU time moves
// less with the load.
const t0 = process.hrtime.bigint();
const c0 = process.cpuUsage();
for (let i = 0; i < N; i += 1) exchange(1000 + i);
const c = process.cpuUsage(c0);
const us = Number(process.hrtime.bigint() - t0) / 1e3 / N;
const cpu = (c.user + c.system) / N;
console.log(`${file}: ${us.toFixed(1)} µs wall, ${cpu.toFixed(1)} µs CPU per exchange (${N} exchanges, ${localReplies} local replies)`);
