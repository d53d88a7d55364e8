import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ModelLoadError } from '../src/core/errors.js';
import { nodeRuntime } from '../src/core/node/runtime.js';
import { runtimeBackend } from '../src/core/session.js';
import { ConfigSection, readConfig } from '../src/models/config.js';
import { InternVLChatModel } from '../src/models/internvl_chat.js';
import type { CausalLM } from '../src/models/llm.js';
import {
  ARCHITECTURES,
  detectArchitecture,
  inputImageSize,
  LLM_FAMILIES,
  llmFamily,
  requireCapability,
} from '../src/models/registry.js';
import { loadLanguageModel } from '../src/tasks/language_model.js';
import { DATA, tempDir } from './helpers/cli.js';

const section = (raw: Record<string, unknown>) => new ConfigSection(raw, '/m/config.json');
const TINY = path.join(DATA, 'models', 'tiny-llama-stories260k');
const CHAT = path.join(DATA, 'fixtures', 'chat_llama');

test('every LLM family row is a bare language model, by architecture and by model_type', () => {
  for (const { architecture, modelType, family } of LLM_FAMILIES) {
    assert.equal(detectArchitecture(section({ architectures: [architecture] })), 'CausalLM', architecture);
    assert.equal(detectArchitecture(section({ model_type: modelType })), 'CausalLM', modelType);
    assert.equal(llmFamily(section({ architectures: [architecture] })), family);
    assert.equal(llmFamily(section({ model_type: modelType })), family);
  }
  assert.equal(llmFamily(section({ architectures: ['InternLM3ForCausalLM'] })), 'llama');
});

test('capabilities: a task asks the registry and names what it needs', () => {
  assert.equal(requireCapability(section({ architectures: ['InternVLChatModel'] }), 'lm').name, 'InternVLChatModel');
  assert.throws(
    () => requireCapability(section({ model_type: 'internvl', qllama_config: {} }), 'chat'),
    (e: unknown) =>
      e instanceof ModelLoadError &&
      e.message ===
        '/m/config.json: InternVLModel is not a chat model (that needs InternVLChatModel, InternVLForConditionalGeneration)',
  );
  const withVision = Object.values(ARCHITECTURES).filter((e) => e.capabilities.includes('vision'));
  assert.ok(withVision.every((e) => e.vision !== undefined));
  assert.deepEqual(
    Object.values(ARCHITECTURES)
      .filter((e) => e.language)
      .map((e) => e.name),
    ['InternVLChatModel', 'InternVLForConditionalGeneration', 'CausalLM'],
  );
});

test('force_image_size is read one way: an integer or a square [s, s], else the ViT size', () => {
  const vit = { imageSize: 448 } as Parameters<typeof inputImageSize>[1];
  assert.equal(inputImageSize(section({ force_image_size: 364 }), vit), 364);
  assert.equal(inputImageSize(section({ force_image_size: [224, 224] }), vit), 224);
  assert.equal(inputImageSize(section({ force_image_size: null }), vit), 448);
  assert.equal(inputImageSize(section({}), vit), 448);
});

/** The logits of the last position for `ids`. */
async function lastLogits(lm: CausalLM, ids: number[]): Promise<Float32Array> {
  const decoder = lm.batchDecoder({ maxSequences: 1, maxLength: ids.length });
  return decoder.prefill(decoder.addSequence(), { ids });
}

test('a bare InternLM3 folder loads for generation, as the LLaMA it is', async () => {
  const dir = tempDir();
  const config = JSON.parse(fs.readFileSync(path.join(TINY, 'config.json'), 'utf8'));
  fs.writeFileSync(
    path.join(dir, 'config.json'),
    JSON.stringify({ ...config, architectures: ['InternLM3ForCausalLM'], model_type: 'internlm3' }),
  );
  fs.copyFileSync(path.join(TINY, 'model.safetensors'), path.join(dir, 'model.safetensors'));
  const [internlm3, llama] = await Promise.all([loadLanguageModel(dir), loadLanguageModel(TINY)]);
  try {
    assert.equal(internlm3.config.family, 'llama');
    assert.deepEqual(await lastLogits(internlm3, [1, 5, 9]), await lastLogits(llama, [1, 5, 9]));
  } finally {
    await Promise.all([internlm3.release(), llama.release()]);
  }
});

test("the language model of a chat checkpoint loads alone (no vision graph) and equals the chat model's", async () => {
  const graphs: string[] = [];
  runtimeBackend.set({
    ...nodeRuntime,
    placeWeights: (name, requests, options) => {
      graphs.push(name);
      return nodeRuntime.placeWeights(name, requests, options);
    },
  });
  let alone: CausalLM | undefined;
  try {
    alone = await loadLanguageModel(CHAT);
    assert.deepEqual(graphs, ['decoder_llama']);
  } finally {
    runtimeBackend.set(nodeRuntime);
  }
  const chat = await InternVLChatModel.load(CHAT);
  try {
    assert.equal(detectArchitecture(await readConfig(CHAT)), 'InternVLChatModel');
    const ids = [1, 20, 30, 40];
    assert.deepEqual(await lastLogits(alone, ids), await lastLogits(chat.language, ids));
  } finally {
    await Promise.all([alone.release(), chat.release()]);
  }
});
