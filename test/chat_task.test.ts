/** The chat task's prompt building for several images, video frames, history, and *-hf Jinja templates. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { DATA, copyFolder } from './helpers/cli.js';
import { loadImage } from '../src/processing/image.js';
import { UsageError } from '../src/core/errors.js';
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

test('a prompt that does not fit the context fails before the vision encoder runs; answers stop at the context', async () => {
  const frame = await image('horse.png');
  const question = 'What happens?';
  const reference = new Conversation(await pipelinePromise);
  reference.setVisuals({ videoFrames: [frame, frame, frame] });
  const promptTokens = (await pipelinePromise).tokenizer.encode(reference.promptFor(question)).length;
  // The same model with a context 2 tokens longer than that prompt.
  const dir = copyFolder(CHAT);
  const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
  config.llm_config.max_position_embeddings = promptTokens + 2;
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  const pipeline = await loadChatPipeline(dir);
  try {
    let encoded = 0;
    const extractFeature = pipeline.model.extractFeature.bind(pipeline.model);
    pipeline.model.extractFeature = (pixels, tiles) => {
      encoded++;
      return extractFeature(pixels, tiles);
    };
    const asking = new Conversation(pipeline);
    asking.setVisuals({ videoFrames: [frame, frame, frame] });
    await assert.rejects(
      asking.ask(question, { maxNewTokens: 3 }),
      (e: unknown) =>
        e instanceof UsageError &&
        (e as Error).message ===
          `the prompt takes ${promptTokens} tokens (768 of them image tokens) and 3 new tokens were asked for, but ` +
            `the model's context holds ${promptTokens + 2} (max_position_embeddings): ask for at most 2 new tokens ` +
            '(--max-new-tokens), or use fewer tiles or frames (--max-tiles, --frames) or a shorter text',
    );
    const four = new Conversation(pipeline);
    four.setVisuals({ videoFrames: [frame, frame, frame, frame] });
    await assert.rejects(four.ask(question), /takes \d+ tokens \(1024 of them image tokens\) but the model's context/);
    assert.equal(encoded, 0, 'the vision encoder never ran');
    const result = await asking.ask(question, { stopTokenIds: [] });
    assert.deepEqual([result.ids.length, result.finishReason], [2, 'length']);
  } finally {
    await pipeline.model.release();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
