/** The pure chat-prompt renderer, the server's tile budget, and turns of one Conversation run one at a time. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { DATA } from './helpers/cli.js';
import { renderChatPrompt, type PromptFormat } from '../src/tasks/chat_prompt.js';
import { getTemplate } from '../src/processing/templates.js';
import { Conversation, loadChatPipeline } from '../src/tasks/chat.js';
import { tileCaps } from '../src/apps/server/routes/chat.js';

const hermes: PromptFormat = { template: getTemplate('Hermes-2'), hfChatTemplate: null, tokensPerTile: 2 };
const ctx = (n: number) => '<IMG_CONTEXT>'.repeat(n);

test('one image: <image> before the text of its turn; system message replaces the template default', () => {
  const prompt = renderChatPrompt(
    hermes,
    [
      { role: 'system', text: 'Be brief.' },
      { role: 'user', text: 'What is it?', images: 1 },
    ],
    [{ kind: 'image', tiles: 3 }],
  );
  assert.equal(
    prompt,
    `<|im_start|>system\nBe brief.<|im_end|><|im_start|>user\n<img>${ctx(6)}</img>\nWhat is it?<|im_end|><|im_start|>assistant\n`,
  );
});

test('images in two user turns are numbered over the conversation; history keeps the answers', () => {
  const prompt = renderChatPrompt(
    hermes,
    [
      { role: 'user', text: 'First?', images: 1 },
      { role: 'assistant', text: 'A cat.' },
      { role: 'user', text: 'And this one?', images: 1 },
    ],
    [
      { kind: 'image', tiles: 1 },
      { kind: 'image', tiles: 1 },
    ],
  );
  assert.ok(
    prompt.includes(
      `<|im_start|>user\nImage-1: <img>${ctx(2)}</img>\nFirst?<|im_end|><|im_start|>assistant\nA cat.<|im_end|><|im_start|>user\nImage-2: <img>${ctx(2)}</img>\nAnd this one?<|im_end|><|im_start|>assistant\n`,
    ),
    prompt,
  );
  assert.ok(prompt.startsWith('<|im_start|>system\n你是由上海人工智能实验室'), 'the template default system message');
});

test('video frames are Frame-k; explicit <image> placeholders are not labelled; consecutive turns merge', () => {
  const frames = renderChatPrompt(
    hermes,
    [{ role: 'user', text: 'What happens?', images: 2 }],
    [
      { kind: 'frame', tiles: 1 },
      { kind: 'frame', tiles: 1 },
    ],
  );
  assert.ok(frames.includes(`Frame-1: <img>${ctx(2)}</img>\nFrame-2: <img>${ctx(2)}</img>\nWhat happens?`));
  const explicit = renderChatPrompt(
    hermes,
    [{ role: 'user', text: 'Look: <image>!', images: 1 }],
    [{ kind: 'image', tiles: 1 }],
  );
  assert.ok(explicit.includes(`user\nLook: <img>${ctx(2)}</img>!<|im_end|>`));
  const merged = renderChatPrompt(
    hermes,
    [
      { role: 'user', text: 'One.' },
      { role: 'user', text: 'Two.' },
    ],
    [],
  );
  assert.ok(merged.includes('<|im_start|>user\nOne.\nTwo.<|im_end|><|im_start|>assistant\n'));
});

test('the *-hf Jinja template path gets plain messages with the placeholders', () => {
  const format: PromptFormat = {
    template: null,
    hfChatTemplate:
      '{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}',
    tokensPerTile: 1,
  };
  const prompt = renderChatPrompt(
    format,
    [
      { role: 'system', text: 'S' },
      { role: 'user', text: 'Q', images: 1 },
    ],
    [{ kind: 'image', tiles: 2 }],
  );
  assert.equal(prompt, `[system]S[user]<img>${ctx(2)}</img>\nQ[assistant]`);
});

test('malformed conversations are refused with the reason', () => {
  assert.throws(() => renderChatPrompt(hermes, [{ role: 'assistant', text: 'Hi' }], []), /last message must be a user/);
  assert.throws(
    () =>
      renderChatPrompt(
        hermes,
        [
          { role: 'assistant', text: 'Hi' },
          { role: 'user', text: 'Q' },
        ],
        [],
      ),
    /must start with a user message/,
  );
  assert.throws(
    () =>
      renderChatPrompt(
        hermes,
        [
          { role: 'user', text: 'Q' },
          { role: 'system', text: 'S' },
          { role: 'user', text: 'R' },
        ],
        [],
      ),
    /system message must come before/,
  );
  assert.throws(() => renderChatPrompt(hermes, [{ role: 'user', text: 'Q', images: 1 }], []), /1 image\(s\) but 0/);
  assert.throws(
    () =>
      renderChatPrompt(hermes, [{ role: 'user', text: '<image> <image>', images: 1 }], [{ kind: 'image', tiles: 1 }]),
    /2 <image> placeholder\(s\) but 1 image/,
  );
});

test('tile caps: as requested within the budget; shared fairly (thumbnail counted) above it', () => {
  assert.deepEqual(tileCaps([6, 6], 14, true), [6, 6]);
  assert.deepEqual(tileCaps([12, 12, 12], 12, true), [3, 3, 3]);
  assert.deepEqual(tileCaps([12, 1], 4, true), [1, 1]);
  assert.deepEqual(tileCaps([12, 12], 12, false), [6, 6]);
  assert.throws(() => tileCaps([1, 1, 1], 2, true), /budget of 2 tiles/);
});

test('two concurrent asks on one Conversation are queued: the second prompt holds the first answer', async () => {
  const pipeline = await loadChatPipeline(path.join(DATA, 'fixtures', 'chat_e2e'));
  try {
    const conversation = new Conversation(pipeline);
    const [a, b] = await Promise.all([
      conversation.ask('Hello', { maxNewTokens: 3 }),
      conversation.ask('And then?', { maxNewTokens: 3 }),
    ]);
    assert.equal(conversation.history.length, 2);
    assert.deepEqual(conversation.history[0], ['Hello', a.response]);
    assert.deepEqual(conversation.history[1], ['And then?', b.response]);
    const fresh = new Conversation(pipeline);
    const alone = pipeline.tokenizer.encode(fresh.promptFor('And then?')).length;
    assert.ok(b.promptTokens > alone, `${b.promptTokens} > ${alone}: the second turn saw the first`);
  } finally {
    await pipeline.model.release();
  }
});
