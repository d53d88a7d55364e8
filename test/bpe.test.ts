import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { before, after, describe, it } from 'node:test';
import { TokenizerError } from '../src/core/errors.js';
import type { ByteLevelBpeTokenizer } from '../src/processing/tokenizers/bpe.js';
import {
  byteLevelBpeFromTokenizerJson,
  loadBpeTokenizer,
  parseMergesTxt,
} from '../src/processing/tokenizers/bpe_loaders.js';
import { QWEN2_PRETOKENIZE_PATTERN, translateOnigurumaPattern } from '../src/processing/tokenizers/bpe_regex.js';

const DATA = fileURLToPath(new URL('./data/tokenizers/qwen2/', import.meta.url));
// The InternVL2-1B tokenizer files, from the chat_e2e checkpoint folder.
const TOKENIZER = fileURLToPath(new URL('./data/fixtures/chat_e2e/', import.meta.url));

interface Qwen2Ref {
  texts: string[];
  ids: number[][];
  decoded: string[];
}
interface GoldenTurn {
  prompt: string;
  input_ids: number[];
  generated_ids: number[];
  generated_text_raw: string;
  response: string;
}

const readJson = async <T>(name: string): Promise<T> => JSON.parse(await readFile(join(DATA, name), 'utf8')) as T;

/** GPT-2 bytes_to_unicode, written independently of the implementation under test. */
function byteChar(b: number): string {
  const printable = (x: number) => (x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255);
  if (printable(b)) return String.fromCharCode(b);
  let n = 0;
  for (let x = 0; x < b; x++) if (!printable(x)) n++;
  return String.fromCharCode(256 + n);
}

let tok: ByteLevelBpeTokenizer;
let tmp: string;

before(async () => {
  tok = await loadBpeTokenizer(TOKENIZER);
  tmp = await mkdtemp(join(tmpdir(), 'bpe-test-'));
});

after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('Qwen2 tokenizer (InternVL2-1B files)', () => {
  it('loads with the special tokens tokenizer_config.json names', () => {
    assert.equal(tok.vocabSize, 151655);
    assert.equal(tok.bosTokenId, null);
    assert.equal(tok.eosTokenId, 151645);
    assert.equal(tok.padTokenId, 151643);
    assert.equal(tok.unkTokenId, null);
  });

  it('matches all 48 HF reference encodings and decodings (qwen2_ref.json)', async () => {
    const ref = await readJson<Qwen2Ref>('qwen2_ref.json');
    assert.equal(ref.texts.length, 48);
    for (let i = 0; i < ref.texts.length; i++) {
      assert.deepEqual(tok.encode(ref.texts[i]), ref.ids[i], `encode ${JSON.stringify(ref.texts[i])}`);
      assert.equal(tok.decode(ref.ids[i]), ref.decoded[i], `decode ${JSON.stringify(ref.texts[i])}`);
    }
  });

  it('matches all 46 llama.cpp reference encodings (ggml-vocab-qwen2.gguf.inp/.out) and round-trips them', async () => {
    const inputs = (await readFile(join(DATA, 'ggml-vocab-qwen2.gguf.inp'), 'utf8')).split('\n__ggml_vocab_test__\n');
    // The file ends with the separator, so the last split is empty.
    assert.equal(inputs.pop(), '');
    const outputs = (await readFile(join(DATA, 'ggml-vocab-qwen2.gguf.out'), 'utf8')).split('\n');
    assert.equal(inputs.length, 46);
    inputs.forEach((text, i) => {
      const want = outputs[i].trim() === '' ? [] : outputs[i].trim().split(/\s+/).map(Number);
      const got = tok.encode(text);
      assert.deepEqual(got, want, `encode ${JSON.stringify(text)}`);
      assert.equal(tok.decode(got), text, `round trip ${JSON.stringify(text)}`);
    });
  });

  it('reproduces the chat_e2e golden input ids and decodes the golden generated ids', async () => {
    const golden = await readJson<{ turns: GoldenTurn[] }>('chat_e2e_golden.json');
    assert.equal(golden.turns.length, 2);
    for (const [i, turn] of golden.turns.entries()) {
      const ids = tok.encode(turn.prompt);
      assert.equal(ids.length, turn.input_ids.length, `turn ${i + 1} length`);
      assert.deepEqual(ids, turn.input_ids, `turn ${i + 1} ids`);
      const text = tok.decode(turn.generated_ids, { skipSpecialTokens: true });
      assert.equal(text, turn.generated_text_raw);
      assert.equal(text.trim(), turn.response);
    }
  });

  it('maps every added token to its single id, in running text too', () => {
    const added: Record<string, number> = {
      '<|endoftext|>': 151643,
      '<|im_start|>': 151644,
      '<|im_end|>': 151645,
      '<img>': 151646,
      '</img>': 151647,
      '<IMG_CONTEXT>': 151648,
      '<quad>': 151649,
      '</quad>': 151650,
      '<ref>': 151651,
      '</ref>': 151652,
      '<box>': 151653,
      '</box>': 151654,
    };
    for (const [content, id] of Object.entries(added)) {
      assert.equal(tok.tokenToId(content), id);
      assert.equal(tok.idToToken(id), content);
      assert.deepEqual(tok.encode(content), [id]);
      assert.ok(tok.isSpecialId(id));
    }
    const a = tok.encode('a')[0];
    const b = tok.encode('b')[0];
    assert.deepEqual(tok.encode('a<|im_end|>b'), [a, 151645, b]);
    assert.deepEqual(tok.encode('<img><IMG_CONTEXT><IMG_CONTEXT></img>'), [151646, 151648, 151648, 151647]);
    // `<image>` is not a token: it is the placeholder chat() expands before tokenizing.
    assert.ok(tok.encode('<image>').length > 1);
  });

  it('adds no BOS/EOS (bos_token null, add_eos_token false) whatever addSpecialTokens says', () => {
    assert.deepEqual(tok.encode('Hello world'), [9707, 1879]);
    assert.deepEqual(tok.encode('Hello world', { addSpecialTokens: false }), [9707, 1879]);
    assert.deepEqual(tok.encode(''), []);
  });

  it('skipSpecialTokens drops added special tokens and keeps the rest', () => {
    const ids = tok.encode('<|im_start|>user\nhi<|im_end|><|endoftext|>');
    assert.equal(tok.decode(ids), '<|im_start|>user\nhi<|im_end|><|endoftext|>');
    assert.equal(tok.decode(ids, { skipSpecialTokens: true }), 'user\nhi');
  });

  it('decodes invalid UTF-8 to U+FFFD per maximal subpart, keeps a leading BOM, drops unknown ids', () => {
    const id = (bytes: number[]) => bytes.map((x) => tok.tokenToId(byteChar(x))!);
    assert.equal(tok.decode(id([0xf0])), '\uFFFD');
    assert.equal(tok.decode(id([0xe4, 0xb8, 0x61])), '\uFFFDa');
    assert.equal(tok.decode(id([0xc0, 0x80])), '\uFFFD\uFFFD');
    assert.equal(tok.decode(id([0xf0, 0x9f, 0x8d, 0xba])), '🍺');
    assert.equal(tok.decode(tok.encode('\uFEFFhi')), '\uFEFFhi');
    assert.equal(tok.decode([9707, 999_999, -1, 1879]), 'Hello world');
  });

  it('normalizes to NFC before splitting (e + combining acute = é)', () => {
    assert.deepEqual(tok.encode('caf\u0065\u0301'), tok.encode('caf\u00e9'));
    assert.equal(tok.decode(tok.encode('caf\u0065\u0301')), 'caf\u00e9');
  });

  it('round-trips arbitrary text (decode(encode(s)) = NFC(s))', () => {
    let seed = 12345;
    const rand = () => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed / 2 ** 32;
    };
    const pools = [
      [0x20, 0x7e],
      [0x00, 0x20],
      [0xa0, 0x2af],
      [0x400, 0x4ff],
      [0x4e00, 0x4fff],
      [0x3040, 0x30ff],
      [0xac00, 0xac80],
      [0x1f300, 0x1f6ff],
      [0x300, 0x36f],
    ];
    for (let n = 0; n < 300; n++) {
      let s = '';
      const len = 1 + Math.floor(rand() * 40);
      for (let k = 0; k < len; k++) {
        const [lo, hi] = pools[Math.floor(rand() * pools.length)];
        s += String.fromCodePoint(lo + Math.floor(rand() * (hi - lo + 1)));
      }
      assert.equal(tok.decode(tok.encode(s)), s.normalize('NFC'), JSON.stringify(s));
    }
  });

  it('merges exactly like the reference "lowest rank first" BPE on long words', async () => {
    const vocab = JSON.parse(await readFile(join(TOKENIZER, 'vocab.json'), 'utf8')) as Record<string, number>;
    const merges = parseMergesTxt(await readFile(join(TOKENIZER, 'merges.txt'), 'utf8'), 'merges.txt');
    const rank = new Map(merges.map(([a, b], r) => [`${a} ${b}`, r]));
    // The original GPT-2 loop: merge every occurrence of the best pair, repeat.
    const naive = (word: string[]): string[] => {
      let w = word;
      for (;;) {
        let best = -1;
        let bestRank = Infinity;
        for (let i = 0; i + 1 < w.length; i++) {
          const r = rank.get(`${w[i]} ${w[i + 1]}`);
          if (r !== undefined && r < bestRank) [best, bestRank] = [i, r];
        }
        if (best < 0) return w;
        const [l, r] = [w[best], w[best + 1]];
        const next: string[] = [];
        for (let i = 0; i < w.length; i++) {
          if (i + 1 < w.length && w[i] === l && w[i + 1] === r) {
            next.push(l + r);
            i++;
          } else next.push(w[i]);
        }
        w = next;
      }
    };
    let seed = 7;
    const rand = () => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed / 2 ** 32;
    };
    const letters = 'etaoinshrdlucmfwypvbgkjqxz';
    for (let n = 0; n < 200; n++) {
      const len = 1 + Math.floor(rand() * (n < 20 ? 400 : 30));
      let word = '';
      for (let k = 0; k < len; k++) word += letters[Math.floor(rand() ** 2 * letters.length)];
      const want = naive([...word]).map((t) => vocab[t]);
      assert.deepEqual(tok.encode(word), want, word);
    }
    const zh = '我们今天在上海人工智能实验室讨论书生多模态大模型的推理效率问题'.repeat(20);
    const bytes = [...Buffer.from(zh, 'utf8')].map(byteChar);
    assert.deepEqual(
      tok.encode(zh),
      naive(bytes).map((t) => vocab[t]),
    );
  });

  it('encodes a few KB of mixed text and decodes it back', () => {
    const text = (
      'The quick brown fox jumps over the lazy dog. 书生多模态大模型 ' +
      "I'll say it's 3.14159 — naïve café, Привет мир! <|im_end|>\n\n  indented code { a[i] += 1; }\n"
    ).repeat(60);
    const ids = tok.encode(`${text}x`);
    assert.ok(ids.length > 1000);
    assert.equal(tok.decode(ids), `${text}x`);
  });
});

describe('tokenizer.json loading', () => {
  const qwen2PreTokenizer = {
    type: 'Sequence',
    pretokenizers: [
      { type: 'Split', pattern: { Regex: QWEN2_PRETOKENIZE_PATTERN }, behavior: 'Isolated', invert: false },
      { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    ],
  };

  it('gives the same ids as the slow files for a Qwen2 tokenizer.json', async () => {
    const vocab = JSON.parse(await readFile(join(TOKENIZER, 'vocab.json'), 'utf8')) as Record<string, number>;
    const merges = parseMergesTxt(await readFile(join(TOKENIZER, 'merges.txt'), 'utf8'), 'merges.txt');
    const config = JSON.parse(await readFile(join(TOKENIZER, 'tokenizer_config.json'), 'utf8')) as {
      added_tokens_decoder: Record<string, Record<string, unknown>>;
    };
    const json = {
      version: '1.0',
      added_tokens: Object.entries(config.added_tokens_decoder).map(([id, t]) => ({ id: Number(id), ...t })),
      normalizer: { type: 'NFC' },
      pre_tokenizer: qwen2PreTokenizer,
      post_processor: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
      decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
      model: {
        type: 'BPE',
        dropout: null,
        unk_token: null,
        continuing_subword_prefix: '',
        end_of_word_suffix: '',
        fuse_unk: false,
        byte_fallback: false,
        ignore_merges: false,
        vocab,
        merges,
      },
    };
    const dir = join(tmp, 'qwen2-json');
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir);
    await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(json));
    await copyFile(join(TOKENIZER, 'tokenizer_config.json'), join(dir, 'tokenizer_config.json'));
    const fast = await loadBpeTokenizer(dir);
    assert.equal(fast.eosTokenId, 151645);
    assert.equal(fast.vocabSize, 151655);
    const ref = await readJson<Qwen2Ref>('qwen2_ref.json');
    for (let i = 0; i < ref.texts.length; i++) assert.deepEqual(fast.encode(ref.texts[i]), ref.ids[i]);
  });

  /** A tiny byte-level vocab: the 256 byte chars, then merged tokens. */
  function tinyJson(
    extra: Record<string, unknown> = {},
    merges: unknown = [
      ['h', 'e'],
      ['l', 'l'],
      ['he', 'll'],
      ['hell', 'o'],
      ['Ġ', 'w'],
    ],
  ) {
    const vocab: Record<string, number> = {};
    for (let b = 0; b < 256; b++) vocab[byteChar(b)] = b;
    for (const t of ['he', 'll', 'hell', 'hello', 'Ġw']) vocab[t] = Object.keys(vocab).length;
    return {
      added_tokens: [
        { id: 300, content: '<sep>', single_word: false, lstrip: true, rstrip: true, normalized: false, special: true },
        { id: 301, content: 'ony', single_word: true, lstrip: false, rstrip: false, normalized: false, special: false },
        { id: 302, content: '<s>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
      ],
      normalizer: null,
      pre_tokenizer: qwen2PreTokenizer,
      post_processor: null,
      decoder: { type: 'ByteLevel' },
      model: { type: 'BPE', vocab, merges },
      ...extra,
    };
  }
  const ch = (s: string) => [...Buffer.from(s, 'utf8')];

  it('accepts merges written as "a b" strings or [a, b] pairs', () => {
    const t1 = byteLevelBpeFromTokenizerJson(tinyJson(), 'tiny.json');
    const t2 = byteLevelBpeFromTokenizerJson(tinyJson({}, ['h e', 'l l', 'he ll', 'hell o', 'Ġ w']), 'tiny.json');
    assert.deepEqual(t1.encode('hello world'), [259, 260, ...ch('orld')]);
    assert.deepEqual(t2.encode('hello world'), t1.encode('hello world'));
  });

  it('honours lstrip / rstrip / single_word of added tokens', () => {
    const t = byteLevelBpeFromTokenizerJson(tinyJson(), 'tiny.json');
    // lstrip + rstrip: the spaces around <sep> belong to it.
    assert.deepEqual(t.encode('a  <sep>  b'), [...ch('a'), 300, ...ch('b')]);
    assert.equal(t.decode(t.encode('a  <sep>  b')), 'a<sep>b');
    // single_word: only a whole word matches.
    assert.deepEqual(t.encode('ony'), [301]);
    assert.deepEqual(t.encode('x ony.'), [...ch('x'), ...ch(' '), 301, ...ch('.')]);
    assert.deepEqual(t.encode('anthony'), ch('anthony'));
  });

  it('applies a TemplateProcessing post-processor only when addSpecialTokens is on', () => {
    const t = byteLevelBpeFromTokenizerJson(
      tinyJson({
        post_processor: {
          type: 'TemplateProcessing',
          single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
          pair: [],
          special_tokens: { '<s>': { id: '<s>', ids: [302], tokens: ['<s>'] } },
        },
      }),
      'tiny.json',
    );
    assert.deepEqual(t.encode('hello'), [302, 259]);
    assert.deepEqual(t.encode('hello', { addSpecialTokens: false }), [259]);
    assert.equal(t.decode([302, 259], { skipSpecialTokens: true }), 'hello');
  });

  it('supports the GPT-2 ByteLevel pre-tokenizer (use_regex, add_prefix_space)', () => {
    const t = byteLevelBpeFromTokenizerJson(
      tinyJson({ pre_tokenizer: { type: 'ByteLevel', add_prefix_space: true, use_regex: true } }),
      'tiny.json',
    );
    assert.deepEqual(t.encode('world'), [260, ...ch('orld')]);
    assert.equal(t.decode(t.encode('hello world')), ' hello world');
  });

  it('refuses tokenizer.json files it cannot honour, naming the file', () => {
    const bad: Array<[Record<string, unknown>, RegExp]> = [
      [{ model: { type: 'Unigram', vocab: [] } }, /tiny\.json: model\.type is "Unigram", not BPE/],
      [{ decoder: { type: 'Metaspace' } }, /tiny\.json: the decoder must be ByteLevel/],
      [{ pre_tokenizer: { type: 'Whitespace' } }, /tiny\.json: the pre_tokenizer must end with ByteLevel/],
      [{ normalizer: { type: 'Precompiled' } }, /tiny\.json: normalizer type "Precompiled"/],
      [
        {
          pre_tokenizer: {
            type: 'Sequence',
            pretokenizers: [
              { type: 'Split', pattern: { Regex: '(?i)a' }, behavior: 'Isolated' },
              { type: 'ByteLevel' },
            ],
          },
        },
        /tiny\.json: cannot use the pre-tokenizer regex/,
      ],
    ];
    for (const [extra, re] of bad) {
      assert.throws(
        () => byteLevelBpeFromTokenizerJson(tinyJson(extra), 'tiny.json'),
        (e: unknown) => e instanceof TokenizerError && re.test(e.message),
      );
    }
    assert.throws(
      () =>
        byteLevelBpeFromTokenizerJson(
          tinyJson({}, [
            ['h', 'e'],
            ['q', 'z'],
          ]),
          'tiny.json',
        ),
      /tiny\.json: merge 2 \("q z"\) produces "qz", which is not in the vocabulary/,
    );
    assert.throws(
      () => byteLevelBpeFromTokenizerJson(tinyJson({}, ['h e', 'bad']), 'tiny.json'),
      /model\.merges\[1\] is not "left right"/,
    );
  });
});

describe('errors for missing or corrupt files', () => {
  const isTokErr = (re: RegExp) => (e: unknown) => e instanceof TokenizerError && re.test(e.message);

  async function folder(name: string, files: Record<string, string>): Promise<string> {
    const dir = join(tmp, name);
    await mkdir(dir, { recursive: true });
    for (const [f, text] of Object.entries(files)) await writeFile(join(dir, f), text);
    return dir;
  }
  const tinyVocab = () => {
    const v: Record<string, number> = {};
    for (let b = 0; b < 256; b++) v[byteChar(b)] = b;
    v.he = 256;
    return v;
  };

  it('a folder without tokenizer files', async () => {
    const dir = await folder('empty', {});
    await assert.rejects(loadBpeTokenizer(dir), isTokErr(/no tokenizer\.json and no vocab\.json \+ merges\.txt/));
    await assert.rejects(loadBpeTokenizer(join(tmp, 'does-not-exist')), isTokErr(/does-not-exist/));
  });

  it('vocab.json missing, merges.txt missing', async () => {
    const d1 = await folder('no-vocab', { 'merges.txt': '#version: 0.2\nh e\n' });
    await assert.rejects(loadBpeTokenizer(d1), isTokErr(/vocab\.json: missing/));
    const d2 = await folder('no-merges', { 'vocab.json': JSON.stringify(tinyVocab()) });
    await assert.rejects(loadBpeTokenizer(d2), isTokErr(/merges\.txt: missing/));
  });

  it('corrupt vocab.json', async () => {
    const d1 = await folder('bad-json', { 'vocab.json': '{"a": 1, ', 'merges.txt': '' });
    await assert.rejects(loadBpeTokenizer(d1), isTokErr(/vocab\.json: not valid JSON/));
    const d2 = await folder('bad-ids', { 'vocab.json': '{"a": "x"}', 'merges.txt': '' });
    await assert.rejects(loadBpeTokenizer(d2), isTokErr(/vocab\.json: vocabulary entry "a" has invalid id "x"/));
    const d3 = await folder('array-vocab', { 'vocab.json': '[1,2]', 'merges.txt': '' });
    await assert.rejects(loadBpeTokenizer(d3), isTokErr(/vocab\.json: the vocabulary must be a JSON object/));
  });

  it('corrupt merges.txt', async () => {
    const vocab = JSON.stringify(tinyVocab());
    const d1 = await folder('bad-merge-line', { 'vocab.json': vocab, 'merges.txt': '#version: 0.2\nh e\nx y z\n' });
    await assert.rejects(loadBpeTokenizer(d1), isTokErr(/merges\.txt: line 3 is not a merge/));
    const d2 = await folder('merge-oov', { 'vocab.json': vocab, 'merges.txt': '#version: 0.2\nh e\nl l\n' });
    await assert.rejects(
      loadBpeTokenizer(d2),
      isTokErr(/merges\.txt: merge 2 \("l l"\) produces "ll", which is not in the vocabulary/),
    );
  });

  it('an unknown tokenizer_class or eos token', async () => {
    const vocab = JSON.stringify(tinyVocab());
    const d1 = await folder('llama-class', {
      'vocab.json': vocab,
      'merges.txt': 'h e\n',
      'tokenizer_config.json': JSON.stringify({ tokenizer_class: 'LlamaTokenizer' }),
    });
    await assert.rejects(loadBpeTokenizer(d1), isTokErr(/tokenizer_config\.json: tokenizer_class "LlamaTokenizer"/));
    const d2 = await folder('bad-eos', {
      'vocab.json': vocab,
      'merges.txt': 'h e\n',
      'tokenizer_config.json': JSON.stringify({ tokenizer_class: 'Qwen2Tokenizer', eos_token: '<|nope|>' }),
    });
    await assert.rejects(
      loadBpeTokenizer(d2),
      isTokErr(/eos_token "<\|nope\|>" is neither in the vocabulary nor an added token/),
    );
    const ok = await loadBpeTokenizer(
      await folder('tiny-ok', { 'vocab.json': vocab, 'merges.txt': '#version: 0.2\nh e\n' }),
    );
    assert.deepEqual(ok.encode('hhe'), [0x68, 256]);
  });
});

describe('Oniguruma → JS regex translation', () => {
  it('spells out (?i:…) including the chars that case-fold onto ASCII', () => {
    const re = new RegExp(`^(?:${translateOnigurumaPattern("(?i:'s|'ll)")})$`, 'u');
    for (const s of ["'s", "'S", "'\u017F", "'ll", "'LL", "'lL"]) assert.ok(re.test(s), s);
    assert.ok(!re.test("'x"));
  });

  it('uses Unicode White_Space for \\s (U+0085 yes, U+FEFF no)', () => {
    const re = new RegExp(`^${translateOnigurumaPattern(String.raw`\s+`)}$`, 'u');
    assert.ok(re.test(' \t\n\u0085\u3000'));
    assert.ok(!re.test('\uFEFF'));
  });
});
