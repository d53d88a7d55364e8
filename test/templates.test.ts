import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { before, describe, it } from 'node:test';
import { ConfigError, TokenizerError, UsageError } from '../src/core/errors.js';
import type { ByteLevelBpeTokenizer } from '../src/processing/tokenizers/bpe.js';
import { loadBpeTokenizer } from '../src/processing/tokenizers/bpe_loaders.js';
import {
  INTERNVL2_5_SYSTEM_MESSAGE,
  INTERNVL_SYSTEM_MESSAGE,
  buildPrompt,
  expandImagePlaceholders,
  extractResponse,
  getTemplate,
  listTemplates,
  renderHfChatTemplate,
} from '../src/processing/templates.js';

const DATA = fileURLToPath(new URL('./data/tokenizers/qwen2/', import.meta.url));
// The InternVL2-1B tokenizer files, from the chat_e2e checkpoint folder.
const TOKENIZER = fileURLToPath(new URL('./data/fixtures/chat_e2e/', import.meta.url));

interface GoldenTurn {
  question: string;
  question_in_prompt: string;
  history: Array<[string, string]>;
  prompt: string;
  prompt_compact: string;
  input_ids: number[];
  generated_ids: number[];
  response: string;
}
interface Golden {
  template: string;
  system_message: string;
  num_image_token: number;
  num_tiles: number;
  turns: GoldenTurn[];
}

let golden: Golden;
let tok: ByteLevelBpeTokenizer;

before(async () => {
  golden = JSON.parse(await readFile(join(DATA, 'chat_e2e_golden.json'), 'utf8')) as Golden;
  tok = await loadBpeTokenizer(TOKENIZER);
});

describe('chat_e2e golden prompts (InternVL2-1B, Hermes-2, official model.chat())', () => {
  it('uses the Hermes-2 template with its default system message S1', () => {
    assert.equal(golden.template, 'Hermes-2');
    assert.equal(getTemplate('Hermes-2').systemMessage, golden.system_message);
    assert.equal(golden.system_message, INTERNVL_SYSTEM_MESSAGE);
  });

  it('rebuilds both turns byte for byte, history included, then the same input ids', () => {
    const template = getTemplate(golden.template);
    assert.equal(golden.turns.length, 2);
    for (const [i, turn] of golden.turns.entries()) {
      // chat() prefixes '<image>\n' when the first question has none.
      const question = i === 0 ? `<image>\n${turn.question}` : turn.question;
      assert.equal(question, turn.question_in_prompt);
      const compact = buildPrompt(template, { question, history: turn.history });
      assert.equal(compact, turn.prompt_compact, `turn ${i + 1} compact prompt`);
      const full = expandImagePlaceholders(compact, [golden.num_tiles], golden.num_image_token);
      assert.equal(full, turn.prompt, `turn ${i + 1} expanded prompt`);
      assert.deepEqual(tok.encode(full), turn.input_ids, `turn ${i + 1} ids`);
    }
    // The second turn's history holds the first answer as chat() returned it.
    assert.deepEqual(golden.turns[1].history, [[golden.turns[0].question_in_prompt, golden.turns[0].response]]);
  });

  it('turns the generated ids into the golden response like chat() does', () => {
    const template = getTemplate(golden.template);
    for (const turn of golden.turns) {
      const decoded = tok.decode(turn.generated_ids, { skipSpecialTokens: true });
      assert.equal(extractResponse(template, decoded), turn.response);
    }
    // eos is the id of sep.strip().
    assert.equal(tok.tokenToId(template.stopStrings[0]), 151645);
  });
});

describe('templates', () => {
  const history: Array<[string, string]> = [['Q1', 'A1']];

  it('Hermes-2 / internlm2-chat: ChatML with a sep that has no newline', () => {
    const want = `<|im_start|>system\n${INTERNVL_SYSTEM_MESSAGE}<|im_end|><|im_start|>user\nQ1<|im_end|><|im_start|>assistant\nA1<|im_end|><|im_start|>user\nQ2<|im_end|><|im_start|>assistant\n`;
    assert.equal(buildPrompt(getTemplate('Hermes-2'), { history, question: 'Q2' }), want);
    assert.equal(buildPrompt(getTemplate('internlm2-chat'), { history, question: 'Q2' }), want);
    assert.deepEqual(getTemplate('Hermes-2').stopStrings, ['<|im_end|>', '<|endoftext|>']);
    assert.deepEqual(getTemplate('internlm2-chat').stopStrings, ['<|im_end|>']);
  });

  it('phi3-chat', () => {
    assert.equal(
      buildPrompt(getTemplate('phi3-chat'), { question: 'Q' }),
      `<|system|>\n${INTERNVL_SYSTEM_MESSAGE}<|end|><|user|>\nQ<|end|><|assistant|>\n`,
    );
    assert.deepEqual(getTemplate('phi3-chat').stopStrings, ['<|end|>']);
  });

  it('internvl2_5: S2 and a sep with a newline; the stop string is the stripped sep', () => {
    assert.equal(
      buildPrompt(getTemplate('internvl2_5'), { history, question: 'Q2' }),
      `<|im_start|>system\n${INTERNVL2_5_SYSTEM_MESSAGE}<|im_end|>\n<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n`,
    );
    assert.deepEqual(getTemplate('internvl2_5').stopStrings, ['<|im_end|>']);
  });

  it('internvl_zh: "{sys} <human>: {q} <bot>: {a}</s>"', () => {
    assert.equal(
      buildPrompt(getTemplate('internvl_zh'), { systemMessage: 'SYS', history, question: 'Q2' }),
      'SYS <human>: Q1 <bot>: A1</s><human>: Q2 <bot>:',
    );
    assert.equal(buildPrompt(getTemplate('internvl_zh'), { question: 'Q' }), ' <human>: Q <bot>:');
  });

  it('vicuna_v1.1 and llama-2', () => {
    const vicuna = getTemplate('vicuna_v1.1');
    assert.equal(
      buildPrompt(vicuna, { history, question: 'Q2' }),
      `${vicuna.systemMessage} USER: Q1 ASSISTANT: A1</s>USER: Q2 ASSISTANT:`,
    );
    const llama = getTemplate('llama-2');
    assert.equal(buildPrompt(llama, { history, question: 'Q2' }), '[INST] Q1 [/INST] A1 </s><s>[INST] Q2 [/INST]');
    assert.equal(
      buildPrompt(llama, { systemMessage: 'Be brief.', question: 'Q' }),
      '[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nQ [/INST]',
    );
  });

  it('a system message given overrides the default; an empty message is written as its bare role', () => {
    const t = getTemplate('Hermes-2');
    assert.equal(
      buildPrompt(t, { systemMessage: 'S', question: 'Q' }),
      '<|im_start|>system\nS<|im_end|><|im_start|>user\nQ<|im_end|><|im_start|>assistant\n',
    );
    // Official MPT style: `if message:` — an empty answer leaves the role without text or sep.
    assert.equal(
      buildPrompt(t, { systemMessage: 'S', history: [['Q1', '']], question: 'Q2' }),
      '<|im_start|>system\nS<|im_end|><|im_start|>user\nQ1<|im_end|><|im_start|>assistant\n<|im_start|>user\nQ2<|im_end|><|im_start|>assistant\n',
    );
  });

  it('unknown template names are a ConfigError listing the known ones', () => {
    assert.throws(
      () => getTemplate('chatml'),
      (e: unknown) =>
        e instanceof ConfigError &&
        e.message.includes('"chatml"') &&
        listTemplates().every((name) => e.message.includes(name)),
    );
    assert.deepEqual(listTemplates(), [
      'Hermes-2',
      'internlm2-chat',
      'phi3-chat',
      'internvl2_5',
      'internvl_zh',
      'vicuna_v1.1',
      'llama-2',
    ]);
  });

  it('extractResponse cuts at the stop string and strips', () => {
    assert.equal(extractResponse(getTemplate('internvl2_5'), ' The cat.<|im_end|>\nrest'), 'The cat.');
    assert.equal(extractResponse(getTemplate('Hermes-2'), '  no stop  '), 'no stop');
  });
});

describe('expandImagePlaceholders', () => {
  it('expands each <image> with its own tile count', () => {
    const ctx = (n: number) => '<IMG_CONTEXT>'.repeat(n);
    assert.equal(
      expandImagePlaceholders('Image-1: <image>\nImage-2: <image>\nQ', [2, 1], 3),
      `Image-1: <img>${ctx(6)}</img>\nImage-2: <img>${ctx(3)}</img>\nQ`,
    );
    assert.equal(expandImagePlaceholders('<image>', [1]), `<img>${ctx(256)}</img>`);
    assert.equal(expandImagePlaceholders('no image', []), 'no image');
  });

  it('refuses a count that does not match the placeholders', () => {
    assert.throws(() => expandImagePlaceholders('<image><image>', [1]), UsageError);
    assert.throws(() => expandImagePlaceholders('<image>', [0]), UsageError);
    assert.throws(() => expandImagePlaceholders('<image>', [1], 0), UsageError);
  });
});

describe('renderHfChatTemplate', () => {
  it('renders the Qwen2 chat_template of tokenizer_config.json', async () => {
    const config = JSON.parse(await readFile(join(TOKENIZER, 'tokenizer_config.json'), 'utf8')) as {
      chat_template: string;
    };
    const messages = [
      { role: 'user', content: 'hi' },
      { role: 'assistant', content: 'hello' },
      { role: 'user', content: 'bye' },
    ];
    assert.equal(
      renderHfChatTemplate(config.chat_template, messages, { addGenerationPrompt: true }),
      '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n<|im_start|>user\nbye<|im_end|>\n<|im_start|>assistant\n',
    );
    assert.equal(
      renderHfChatTemplate(
        config.chat_template,
        [
          { role: 'system', content: 'S' },
          { role: 'user', content: 'q' },
        ],
        {
          addGenerationPrompt: false,
        },
      ),
      '<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nq<|im_end|>\n',
    );
  });

  it('handles content lists (HF multimodal messages) and special-token variables', () => {
    const tpl =
      "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n{% for c in m.content %}{% if c.type == 'image' %}<IMG_CONTEXT>{% else %}{{ c.text }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    const out = renderHfChatTemplate(
      tpl,
      [{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: 'What is it?' }] }],
      { addGenerationPrompt: true, specialTokens: { bos_token: '<s>' } },
    );
    assert.equal(out, '<s><|im_start|>user\n<IMG_CONTEXT>What is it?<|im_end|>\n<|im_start|>assistant\n');
  });

  it('trims blocks like transformers (trim_blocks, lstrip_blocks)', () => {
    const tpl = '{% for m in messages %}\n  {% if m.role == "user" %}\n{{ m.content }}\n  {% endif %}\n{% endfor %}';
    const messages = [
      { role: 'user', content: 'a' },
      { role: 'user', content: 'b' },
    ];
    assert.equal(renderHfChatTemplate(tpl, messages, { addGenerationPrompt: false }), 'a\nb\n');
  });

  it('a broken template or raise_exception is a TokenizerError', () => {
    assert.throws(() => renderHfChatTemplate('{% for %}', [], { addGenerationPrompt: false }), TokenizerError);
    assert.throws(
      () => renderHfChatTemplate("{{ raise_exception('no system role') }}", [], { addGenerationPrompt: false }),
      (e: unknown) => e instanceof TokenizerError && /no system role/.test(e.message),
    );
  });
});
