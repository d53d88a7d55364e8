/**
 * The official goldens of every model fixture (InternVL-Chat with Qwen2/LLaMA/InternLM2, the *-hf layout,
 * InternVL-C/G) through the library's verify runners; each must compare all its goldens within bound.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { DATA, runCli } from './helpers/cli.js';
import { verifyFixture } from '../src/apps/verify/index.js';

const FIXTURES = path.join(DATA, 'fixtures');

const EXPECTED: Record<string, string[]> = {
  chat_qwen2: ['out.vit_embeds', 'out.logits', 'out.generated_ids', 'out.greedy_step_logits'],
  chat_llama: ['out.vit_embeds', 'out.logits', 'out.generated_ids', 'out.greedy_step_logits'],
  chat_internlm2: ['out.vit_embeds', 'out.logits', 'out.generated_ids', 'out.greedy_step_logits'],
  hf_internvl: ['out.logits'],
  internvl_clip: [
    'out.vision_last_hidden_state',
    'out.qllama_query_features',
    'out.text_hidden',
    'out.text_embeds',
    'out.image_embeds_C',
    'out.logits_per_image_C',
    'out.image_embeds_G',
    'out.logits_per_image_G',
  ],
};

for (const [name, goldens] of Object.entries(EXPECTED)) {
  test(`verify ${name}: every golden within bound`, async () => {
    const report = await verifyFixture(path.join(FIXTURES, name));
    assert.deepEqual(report.compared.map((c) => c.name).sort(), [...goldens].sort());
    assert.deepEqual(report.skipped, []);
    for (const c of report.compared) {
      assert.ok(c.ok, `${c.name}: max rel error ${c.maxRelError} (bound ${c.bound.metric} ${c.bound.value})`);
      // float32 against float64 goldens: far inside the 1e-4 acceptance bound.
      if (c.bound.metric === 'relative') assert.ok(c.maxRelError < 1e-5, `${c.name}: ${c.maxRelError}`);
      else assert.equal(c.maxAbsError, 0, c.name);
    }
    assert.equal(report.status, 0);
  });
}

test('internvl verify prints one row per tensor for several folders and exits 0', async () => {
  const result = await runCli(['verify', path.join(FIXTURES, 'chat_qwen2'), path.join(FIXTURES, 'internvl_clip')]);
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /out\.generated_ids\s+\[1,8\]\s+0\s+0\s+exact\s+ok/);
  assert.match(result.stdout, /out\.logits_per_image_G\s+\[2,3\]/);
});
