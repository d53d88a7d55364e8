/** The chat task's prompt building for several images, video frames, history, and *-hf Jinja templates. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { DATA, copyFolder } from './helpers/cli.js';
import { loadImage } from '../src/processing/image.js';
import { Conversation, loadChatPipeline } from '../src/tasks/chat.js';

const CHAT = path.join(DATA, 'fixtures', 'chat_e2e');
const pipelinePromise = loadChatPipeline(CHAT);
const image = (name: string) => loadImage(path.join(DATA, 'images', name));
const compact = (prompt: string) =>
  prompt.replace(/(<IMG_CONTEXT>)+/g, (run) => `<IMG_CONTEXT>×${run.length / '<IMG_CONTEXT>'.length}`);

test('several images are labelled Image-k and each gets 256 tokens per tile', async () => {
  const pipeline = await pipelinePromise;
  const conversation = new Conversation(pipeline);
  conversation.setVisuals({ images: [await image('chelsea.png'), await image('rocket.jpg')], maxTiles: 1 });
  const prompt = compact(conversation.promptFor('What differs?'));
  assert.ok(
    prompt.includes(
      '<|im_start|>user\nImage-1: <img><IMG_CONTEXT>×256</img>\nImage-2: <img><IMG_CONTEXT>×256</img>\nWhat differs?<|im_end|><|im_start|>assistant\n',
    ),
    prompt,
  );
});

test('video frames are labelled Frame-k with one tile each, whatever maxTiles says', async () => {
  const pipeline = await pipelinePromise;
  const conversation = new Conversation(pipeline);
  const frame = await image('horse.png');
  conversation.setVisuals({ videoFrames: [frame, frame, frame], maxTiles: 6 });
  const prompt = compact(conversation.promptFor('What happens?'));
  assert.ok(
    prompt.includes(
      'Frame-1: <img><IMG_CONTEXT>×256</img>\nFrame-2: <img><IMG_CONTEXT>×256</img>\nFrame-3: <img><IMG_CONTEXT>×256</img>\nWhat happens?',
    ),
    prompt,
  );
  const expectedTokens = pipeline.tokenizer.encode(conversation.promptFor('What happens?')).length;
  const result = await conversation.ask('What happens?', { maxNewTokens: 2 });
  assert.equal(result.ids.length, 2);
  assert.equal(result.promptTokens, expectedTokens);
  assert.ok(expectedTokens > 3 * 256);
});

test('an explicit <image> in the question is not labelled again; text-only chat has no image tokens', async () => {
  const pipeline = await pipelinePromise;
  const withImage = new Conversation(pipeline);
  withImage.setVisuals({ images: [await image('chelsea.png')], maxTiles: 1 });
  assert.ok(
    compact(withImage.promptFor('Look: <image> what is it?')).includes(
      'user\nLook: <img><IMG_CONTEXT>×256</img> what is it?',
    ),
  );
  const textOnly = new Conversation(pipeline, { systemMessage: 'Be brief.' });
  const prompt = textOnly.promptFor('Hello');
  assert.equal(
    prompt,
    '<|im_start|>system\nBe brief.<|im_end|><|im_start|>user\nHello<|im_end|><|im_start|>assistant\n',
  );
  const answer = await textOnly.ask('Hello', { maxNewTokens: 3 });
  assert.equal(textOnly.history.length, 1);
  assert.deepEqual(textOnly.history[0], ['Hello', answer.response]);
  assert.throws(() => withImage.promptFor('<image> and <image>'), /2 <image> placeholder\(s\) but 1 image/);
});

test('*-hf checkpoints use the chat_template of their tokenizer config', async () => {
  const dir = copyFolder(path.join(DATA, 'fixtures', 'hf_internvl'));
  for (const file of [
    'vocab.json',
    'merges.txt',
    'tokenizer_config.json',
    'added_tokens.json',
    'special_tokens_map.json',
  ]) {
    fs.copyFileSync(path.join(CHAT, file), path.join(dir, file));
  }
  const pipeline = await loadChatPipeline(dir);
  assert.equal(pipeline.template, null);
  assert.equal(pipeline.imageContextId, 299);
  const conversation = new Conversation(pipeline);
  conversation.setVisuals({ images: [await image('chelsea.png')], maxTiles: 1 });
  const tokens = pipeline.model.tokensPerTile;
  assert.equal(
    compact(conversation.promptFor('Describe.')),
    `<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<img><IMG_CONTEXT>×${tokens}</img>\nDescribe.<|im_end|>\n<|im_start|>assistant\n`,
  );
  await pipeline.model.release();
});
