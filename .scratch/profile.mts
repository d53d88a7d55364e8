// Decode-step profile: wall time per decode(), time inside session.run, kernel time by op (onnxruntime profiler).
import fs from 'node:fs';
import * as ortNode from 'onnxruntime-node';
const root = process.argv[2] ?? '/work/wt/decoder';
const { InternVLChatModel } = await import(`${root}/src/models/internvl_chat.ts`);
const { weightFormatHook } = await import(`${root}/src/core/quantize.ts`);
const profile = process.argv[3] === 'profile';
if (profile) {
  const create = ortNode.InferenceSession.create;
  (ortNode.InferenceSession as any).create = (bytes: any, opts: any) => create(bytes, { ...opts, enableProfiling: true, profileFilePrefix: '/tmp/dec/prof' });
}
const model = await InternVLChatModel.load('/tmp/dec/bw/model-bfloat16', {
  session: { threads: 2, cacheDir: '/tmp/dec/bw/cache' },
  configureLlmGraph: weightFormatHook('int4'),
});
const lm = model.language;
const V = lm.config.vocabSize;
const ids = Array.from({ length: 276 }, (_, i) => 1000 + ((i * 7919) % (V - 2000)));
const argmax = (row: Float32Array) => { let b = 0; for (let i = 1; i < row.length; i++) if (row[i] > row[b]) b = i; return b; };
const session: any = (lm as any).session?.session ?? null;
let runMs = 0;
const steps: number[] = [];
const prefills: number[][] = [];
if ('batchDecoder' in lm) {
  const d = lm.batchDecoder({ maxSequences: 1, maxLength: 276 + 200 });
  const embeds = await model.embedWithImages(ids, -1, null);
  for (let r = 0; r < 4; r++) { const p = d.addSequence(); const t = performance.now(); const c = process.cpuUsage(); await d.prefill(p, { embeds }); const w = performance.now() - t; const u = process.cpuUsage(c); prefills.push([w, (u.user + u.system) / 1000 / w / 2]); d.removeSequence(p); }
  const s = d.addSequence();
  let token = argmax(await d.prefill(s, { ids }));
  const origRun = lm.run.bind(lm);
  lm.run = async (f: any, o: any) => { const t = performance.now(); const r = await origRun(f, o); runMs += performance.now() - t; return r; };
  for (let i = 0; i < 160; i++) {
    if (i === 32) { runMs = 0; steps.length = 0; }
    const t = performance.now();
    const [row] = await d.decode([s], [token]);
    steps.push(performance.now() - t);
    token = argmax(row);
  }
} else {
  const S = ids.length;
  for (let r = 0; r < 4; r++) { const t = performance.now(); const c = process.cpuUsage(); await lm.step({ embeds: lm.embedTokens(ids), batch: 1, seq: S, positions: Int32Array.from({ length: S }, (_, i) => i), attentionMask: new Uint8Array(S).fill(1), logitIndices: [S - 1], cache: lm.emptyCache(1) }); const w = performance.now() - t; const u = process.cpuUsage(c); prefills.push([w, (u.user + u.system) / 1000 / w / 2]); }
  let { logits, cache } = await lm.step({ embeds: lm.embedTokens(ids), batch: 1, seq: S, positions: Int32Array.from({ length: S }, (_, i) => i), attentionMask: new Uint8Array(S).fill(1), logitIndices: [S - 1], cache: lm.emptyCache(1) });
  let token = argmax(logits);
  const ms: any = (lm as any).session;
  const origRun = ms.run.bind(ms);
  ms.run = async (f: any, o: any) => { const t = performance.now(); const r = await origRun(f, o); runMs += performance.now() - t; return r; };
  for (let i = 0; i < 160; i++) {
    if (i === 32) { runMs = 0; steps.length = 0; }
    const t = performance.now();
    const r = await lm.step({ embeds: lm.embedTokens([token]), batch: 1, seq: 1, positions: Int32Array.of(cache.length), attentionMask: new Uint8Array(cache.length + 1).fill(1), logitIndices: [0], cache });
    steps.push(performance.now() - t);
    cache = r.cache; token = argmax(r.logits);
  }
}
steps.sort((a, b) => a - b);
const total = steps.reduce((a, b) => a + b, 0);
console.log(JSON.stringify({ root, steps: steps.length, medianMs: +steps[steps.length >> 1].toFixed(2), meanMs: +(total / steps.length).toFixed(2), runMeanMs: +(runMs / steps.length).toFixed(2), jsMeanMs: +((total - runMs) / steps.length).toFixed(2), prefillMs: prefills.map(([w, u]) => `${w.toFixed(0)}@${u.toFixed(2)}`).join(' ') }));
if (profile) {
  const sess = (lm as any).session.session;
  const file = await sess.endProfiling?.();
  console.log('profile', file);
}
await model.release();
