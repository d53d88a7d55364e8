/** config.json: architecture detection and field errors that name the file and the field. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { runCli, tempDir } from './helpers/cli.js';
import { ConfigError, ModelLoadError } from '../src/core/errors.js';
import { ConfigSection } from '../src/models/config.js';
import { detectArchitecture } from '../src/models/registry.js';
import { parseLlmConfig } from '../src/models/llm.js';
import { parseInternVisionConfig } from '../src/models/intern_vit.js';

const section = (raw: Record<string, unknown>) => new ConfigSection(raw, '/m/config.json');

test('architectures and model_type select the model family', () => {
  assert.equal(detectArchitecture(section({ architectures: ['InternVLChatModel'] })), 'InternVLChatModel');
  assert.equal(
    detectArchitecture(section({ architectures: ['InternVLForConditionalGeneration'] })),
    'InternVLForConditionalGeneration',
  );
  assert.equal(detectArchitecture(section({ architectures: ['Qwen2ForCausalLM'] })), 'CausalLM');
  assert.equal(detectArchitecture(section({ model_type: 'internvl', qllama_config: {} })), 'InternVLModel');
  assert.equal(
    detectArchitecture(section({ model_type: 'internvl', text_config: {} })),
    'InternVLForConditionalGeneration',
  );
  assert.equal(detectArchitecture(section({ model_type: 'intern_vit_6b' })), 'InternVisionModel');
  assert.throws(
    () => detectArchitecture(section({ architectures: ['BertModel'], model_type: 'bert' })),
    (e: unknown) =>
      e instanceof ModelLoadError &&
      /\/m\/config\.json: unknown architecture \["BertModel"\].*supported: InternVisionModel/.test(e.message),
  );
});

test('missing or mistyped fields name the file and the field path', () => {
  assert.throws(
    () =>
      parseLlmConfig(
        new ConfigSection({ architectures: ['LlamaForCausalLM'], hidden_size: 64 }, '/m/config.json', 'llm_config'),
      ),
    (e: unknown) =>
      e instanceof ConfigError && e.message === "/m/config.json: field 'llm_config.num_attention_heads' is missing",
  );
  assert.throws(
    () => parseInternVisionConfig(section({ hidden_size: '64', num_attention_heads: 4 })),
    (e: unknown) => e instanceof ConfigError && /field 'hidden_size' must be a number, got "64"/.test(e.message),
  );
  assert.throws(() => parseLlmConfig(section({ architectures: ['MambaForCausalLM'] })), /unsupported language model/);
  assert.throws(
    () => parseLlmConfig(section({ architectures: ['LlamaForCausalLM'], hidden_act: 'gelu' })),
    /field 'hidden_act' 'gelu' is not supported/,
  );
});

test('the CLI reports an unknown architecture in one line', async () => {
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ architectures: ['BertModel'] }));
  const result = await runCli(['chat', '--model', dir, 'hi']);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /^error: [^\n]*unknown architecture \["BertModel"\][^\n]*\n$/);
});
