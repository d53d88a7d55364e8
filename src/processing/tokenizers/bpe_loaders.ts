/**
 * Builds a ByteLevelBpeTokenizer from a checkpoint folder: a `tokenizer.json` (normalizer, pre-tokenizer,
 * post-processor and added tokens as Hugging Face `tokenizers` writes them), or the slow-tokenizer files
 * (`vocab.json` + `merges.txt` + `tokenizer_config.json` + `added_tokens.json` + `special_tokens_map.json`).
 */
import { TokenizerError } from '../../core/errors.js';
import { errorCode, files } from '../../core/io.js';
import { readJsonFile, readOptionalJsonObject } from '../../core/json.js';
import {
  ByteLevelBpeTokenizer,
  type AddedToken,
  type ByteLevelBpeSpec,
  type PreTokenizerStep,
  type SplitBehavior,
} from './bpe.js';
import { compilePattern, escapeLiteral, QWEN2_PRETOKENIZE_PATTERN } from './bpe_regex.js';
type Json = unknown;

function isRecord(v: Json): v is Record<string, Json> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

async function exists(file: string): Promise<boolean> {
  return (await files.get()).isFile(file);
}

async function readText(file: string): Promise<string> {
  try {
    return await (await files.get()).readText(file);
  } catch (err) {
    const code = errorCode(err);
    throw new TokenizerError(`${file}: cannot read the file${code ? ` (${code})` : ''}`, { cause: err });
  }
}

function readJson(file: string): Promise<Json> {
  return readJsonFile(file, { error: TokenizerError });
}

function readOptionalJson(file: string): Promise<Record<string, Json> | null> {
  return readOptionalJsonObject(file, { error: TokenizerError });
}

function parseVocab(v: Json, source: string): Map<string, number> {
  if (!isRecord(v)) throw new TokenizerError(`${source}: the vocabulary must be a JSON object of token → id`);
  const vocab = new Map<string, number>();
  for (const key in v) {
    const id = v[key];
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) {
      throw new TokenizerError(
        `${source}: vocabulary entry ${JSON.stringify(key)} has invalid id ${JSON.stringify(id)}`,
      );
    }
    vocab.set(key, id);
  }
  if (vocab.size === 0) throw new TokenizerError(`${source}: the vocabulary is empty`);
  return vocab;
}

/** merges.txt as the slow Qwen2/GPT-2 tokenizers read it: a `#version` first line is skipped, blank lines too. */
export function parseMergesTxt(text: string, source: string): Array<[string, string]> {
  const merges: Array<[string, string]> = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === '' || (i === 0 && line.startsWith('#version'))) continue;
    const parts = line.split(/\s+/);
    if (parts.length !== 2) {
      throw new TokenizerError(
        `${source}: line ${i + 1} is not a merge "left right": ${JSON.stringify(line.slice(0, 80))}`,
      );
    }
    merges.push([parts[0], parts[1]]);
  }
  return merges;
}

function parseJsonMerges(v: Json, source: string): Array<[string, string]> {
  if (!Array.isArray(v)) throw new TokenizerError(`${source}: model.merges must be an array`);
  return v.map((m, i) => {
    if (typeof m === 'string') {
      const sp = m.indexOf(' ');
      if (sp <= 0 || sp === m.length - 1 || m.indexOf(' ', sp + 1) >= 0) {
        throw new TokenizerError(`${source}: model.merges[${i}] is not "left right": ${JSON.stringify(m)}`);
      }
      return [m.slice(0, sp), m.slice(sp + 1)];
    }
    if (Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string') return [m[0], m[1]];
    throw new TokenizerError(`${source}: model.merges[${i}] must be "left right" or ["left", "right"]`);
  });
}

/** A special-token field of a config: a string, an AddedToken-like object, or null. */
function tokenContent(v: Json): string | null {
  if (typeof v === 'string') return v;
  if (isRecord(v) && typeof v.content === 'string') return v.content;
  return null;
}

function parseAddedToken(v: Json, idFallback: number | undefined, source: string, where: string): AddedToken {
  if (typeof v === 'string') {
    if (idFallback === undefined) throw new TokenizerError(`${source}: ${where} has no id`);
    return {
      id: idFallback,
      content: v,
      special: false,
      lstrip: false,
      rstrip: false,
      singleWord: false,
      normalized: true,
    };
  }
  if (!isRecord(v) || typeof v.content !== 'string') {
    throw new TokenizerError(`${source}: ${where} must be an object with a "content" string`);
  }
  const id = typeof v.id === 'number' ? v.id : idFallback;
  if (id === undefined || !Number.isInteger(id) || id < 0)
    throw new TokenizerError(`${source}: ${where} has no valid id`);
  const special = v.special === true;
  return {
    id,
    content: v.content,
    special,
    lstrip: v.lstrip === true,
    rstrip: v.rstrip === true,
    singleWord: v.single_word === true,
    // HF's default: special tokens match the raw text, others the normalized text.
    normalized: typeof v.normalized === 'boolean' ? v.normalized : !special,
  };
}

function parseNormalizer(v: Json, source: string): ((s: string) => string) | null {
  if (v === null || v === undefined) return null;
  if (!isRecord(v)) throw new TokenizerError(`${source}: normalizer must be an object or null`);
  switch (v.type) {
    case 'NFC':
    case 'NFD':
    case 'NFKC':
    case 'NFKD': {
      const form = v.type;
      return (s) => s.normalize(form);
    }
    case 'Lowercase':
      return (s) => s.toLowerCase();
    case 'Sequence': {
      if (!Array.isArray(v.normalizers))
        throw new TokenizerError(`${source}: normalizer Sequence without "normalizers"`);
      const fns = v.normalizers
        .map((n) => parseNormalizer(n, source))
        .filter((f): f is (s: string) => string => f !== null);
      return fns.length === 0 ? null : (s) => fns.reduce((acc, f) => f(acc), s);
    }
    default:
      throw new TokenizerError(
        `${source}: normalizer type ${JSON.stringify(v.type)} is not supported by the byte-level BPE tokenizer`,
      );
  }
}

const SPLIT_BEHAVIORS = new Set<SplitBehavior>([
  'Isolated',
  'Removed',
  'MergedWithPrevious',
  'MergedWithNext',
  'Contiguous',
]);

function parsePreTokenizer(
  v: Json,
  source: string,
): { steps: PreTokenizerStep[]; byteLevel: { addPrefixSpace: boolean; useRegex: boolean } } {
  const flat: Record<string, Json>[] = [];
  const flatten = (p: Json): void => {
    if (!isRecord(p)) throw new TokenizerError(`${source}: pre_tokenizer must be an object`);
    if (p.type === 'Sequence') {
      if (!Array.isArray(p.pretokenizers))
        throw new TokenizerError(`${source}: pre_tokenizer Sequence without "pretokenizers"`);
      p.pretokenizers.forEach(flatten);
    } else {
      flat.push(p);
    }
  };
  if (v === null || v === undefined) {
    throw new TokenizerError(`${source}: no pre_tokenizer; a byte-level BPE needs a ByteLevel pre-tokenizer`);
  }
  flatten(v);
  const last = flat[flat.length - 1];
  if (last?.type !== 'ByteLevel') {
    throw new TokenizerError(`${source}: the pre_tokenizer must end with ByteLevel (this is a byte-level BPE loader)`);
  }
  const steps: PreTokenizerStep[] = [];
  for (const p of flat.slice(0, -1)) {
    if (p.type === 'Split') {
      const pat = p.pattern;
      let regex: RegExp;
      if (isRecord(pat) && typeof pat.Regex === 'string') regex = compilePattern(pat.Regex, source);
      else if (isRecord(pat) && typeof pat.String === 'string') regex = new RegExp(escapeLiteral(pat.String), 'gu');
      else throw new TokenizerError(`${source}: Split pre-tokenizer needs pattern.Regex or pattern.String`);
      const behavior = p.behavior as SplitBehavior;
      if (!SPLIT_BEHAVIORS.has(behavior))
        throw new TokenizerError(`${source}: Split behavior ${JSON.stringify(p.behavior)} is not supported`);
      steps.push({ type: 'split', regex, behavior, invert: p.invert === true });
    } else if (p.type === 'Digits') {
      steps.push({ type: 'digits', individual: p.individual_digits === true });
    } else {
      throw new TokenizerError(
        `${source}: pre_tokenizer type ${JSON.stringify(p.type)} is not supported by the byte-level BPE tokenizer`,
      );
    }
  }
  return {
    steps,
    byteLevel: { addPrefixSpace: last.add_prefix_space === true, useRegex: last.use_regex !== false },
  };
}

function checkDecoder(v: Json, source: string): void {
  const ok = (d: Json): boolean =>
    isRecord(d) &&
    (d.type === 'ByteLevel' ||
      (d.type === 'Sequence' && Array.isArray(d.decoders) && d.decoders.length > 0 && d.decoders.every(ok)));
  if (!ok(v)) throw new TokenizerError(`${source}: the decoder must be ByteLevel (this is a byte-level BPE loader)`);
}

/** Ids the post-processor puts around a single sequence; only ByteLevel and TemplateProcessing are understood. */
function parsePostProcessor(v: Json, source: string): { prefix: number[]; suffix: number[] } | null {
  if (v === null || v === undefined || (isRecord(v) && v.type === 'ByteLevel')) return null;
  if (!isRecord(v)) throw new TokenizerError(`${source}: post_processor must be an object or null`);
  if (v.type === 'Sequence' && Array.isArray(v.processors)) {
    let found: { prefix: number[]; suffix: number[] } | null = null;
    for (const p of v.processors) {
      const r = parsePostProcessor(p, source);
      if (r) found = r;
    }
    return found;
  }
  if (v.type !== 'TemplateProcessing') {
    throw new TokenizerError(`${source}: post_processor type ${JSON.stringify(v.type)} is not supported`);
  }
  const specials = isRecord(v.special_tokens) ? v.special_tokens : {};
  const prefix: number[] = [];
  const suffix: number[] = [];
  let seenSequence = false;
  if (!Array.isArray(v.single)) throw new TokenizerError(`${source}: TemplateProcessing without "single"`);
  for (const piece of v.single) {
    if (isRecord(piece) && isRecord(piece.Sequence)) {
      seenSequence = true;
    } else if (isRecord(piece) && isRecord(piece.SpecialToken) && typeof piece.SpecialToken.id === 'string') {
      const name = piece.SpecialToken.id;
      const entry = specials[name];
      if (!isRecord(entry) || !Array.isArray(entry.ids)) {
        throw new TokenizerError(
          `${source}: TemplateProcessing refers to unknown special token ${JSON.stringify(name)}`,
        );
      }
      (seenSequence ? suffix : prefix).push(...(entry.ids as number[]));
    } else {
      throw new TokenizerError(
        `${source}: TemplateProcessing.single has an entry that is neither Sequence nor SpecialToken`,
      );
    }
  }
  return { prefix, suffix };
}

interface SpecialTokens {
  bos: string | null;
  eos: string | null;
  pad: string | null;
  unk: string | null;
  addBos: boolean;
  addEos: boolean;
  cleanUp: boolean;
}

function specialTokensFrom(config: Record<string, Json> | null, map: Record<string, Json> | null): SpecialTokens {
  const pick = (key: string): string | null => {
    if (config && key in config) return tokenContent(config[key]);
    if (map && key in map) return tokenContent(map[key]);
    return null;
  };
  return {
    bos: pick('bos_token'),
    eos: pick('eos_token'),
    pad: pick('pad_token'),
    unk: pick('unk_token'),
    addBos: config?.add_bos_token === true,
    addEos: config?.add_eos_token === true,
    cleanUp: config?.clean_up_tokenization_spaces === true,
  };
}

/** Build from a parsed `tokenizer.json` (plus, optionally, the `tokenizer_config.json` / `special_tokens_map.json` beside it). */
export function byteLevelBpeFromTokenizerJson(
  json: Json,
  source: string,
  config: Record<string, Json> | null = null,
  specialMap: Record<string, Json> | null = null,
): ByteLevelBpeTokenizer {
  if (!isRecord(json)) throw new TokenizerError(`${source}: expected a JSON object`);
  const model = json.model;
  if (!isRecord(model)) throw new TokenizerError(`${source}: no "model" object`);
  if (model.type !== undefined && model.type !== 'BPE') {
    throw new TokenizerError(`${source}: model.type is ${JSON.stringify(model.type)}, not BPE`);
  }
  // tokenizers writes "" (or null) when these are unused.
  if (model.continuing_subword_prefix || model.end_of_word_suffix) {
    throw new TokenizerError(`${source}: continuing_subword_prefix / end_of_word_suffix are not supported`);
  }
  const vocab = parseVocab(model.vocab, `${source} (model.vocab)`);
  const merges = parseJsonMerges(model.merges, source);
  const { steps, byteLevel } = parsePreTokenizer(json.pre_tokenizer, source);
  checkDecoder(json.decoder, source);
  const post = parsePostProcessor(json.post_processor, source);
  const added = Array.isArray(json.added_tokens)
    ? json.added_tokens.map((t, i) => parseAddedToken(t, undefined, source, `added_tokens[${i}]`))
    : [];
  const sp = specialTokensFrom(config, specialMap);
  const unkFromModel = typeof model.unk_token === 'string' ? model.unk_token : null;
  const spec: ByteLevelBpeSpec = {
    source,
    vocab,
    merges,
    addedTokens: added,
    normalizer: parseNormalizer(json.normalizer, source),
    preTokenizer: steps,
    byteLevel,
    ignoreMerges: model.ignore_merges === true,
    bosToken: sp.bos,
    eosToken: sp.eos,
    padToken: sp.pad,
    unkToken: sp.unk ?? unkFromModel,
    postProcessor: post,
    addBosToken: sp.addBos,
    addEosToken: sp.addEos,
    cleanUpTokenizationSpaces: sp.cleanUp,
  };
  return new ByteLevelBpeTokenizer(spec);
}

const QWEN2_CLASSES = new Set(['Qwen2Tokenizer', 'Qwen2TokenizerFast']);
const GPT2_CLASSES = new Set(['GPT2Tokenizer', 'GPT2TokenizerFast']);

/** Build from the slow-tokenizer files of a folder (`vocab.json`, `merges.txt`, optional configs). */
async function loadFromSlowFiles(dir: string): Promise<ByteLevelBpeTokenizer> {
  const { join } = await files.get();
  const vocabFile = join(dir, 'vocab.json');
  const mergesFile = join(dir, 'merges.txt');
  const configFile = join(dir, 'tokenizer_config.json');
  const [vocabJson, mergesText, config, specialMap, addedJson] = await Promise.all([
    readJson(vocabFile),
    readText(mergesFile),
    readOptionalJson(configFile),
    readOptionalJson(join(dir, 'special_tokens_map.json')),
    readOptionalJson(join(dir, 'added_tokens.json')),
  ]);
  const vocab = parseVocab(vocabJson, vocabFile);
  const merges = parseMergesTxt(mergesText, mergesFile);

  const cls = typeof config?.tokenizer_class === 'string' ? config.tokenizer_class : 'Qwen2Tokenizer';
  const isGpt2 = GPT2_CLASSES.has(cls);
  if (!isGpt2 && !QWEN2_CLASSES.has(cls)) {
    throw new TokenizerError(
      `${configFile}: tokenizer_class ${JSON.stringify(cls)} is not a byte-level BPE this loader knows from vocab.json + merges.txt (Qwen2Tokenizer, GPT2Tokenizer); provide a tokenizer.json`,
    );
  }

  // added_tokens_decoder carries the flags; added_tokens.json only content → id.
  const added = new Map<number, AddedToken>();
  const decoderEntries = config?.added_tokens_decoder;
  if (isRecord(decoderEntries)) {
    for (const [idText, entry] of Object.entries(decoderEntries)) {
      const id = Number(idText);
      if (!Number.isInteger(id))
        throw new TokenizerError(`${configFile}: added_tokens_decoder key ${JSON.stringify(idText)} is not an id`);
      added.set(id, parseAddedToken(entry, id, configFile, `added_tokens_decoder[${idText}]`));
    }
  }
  const specialContents = new Set<string>();
  for (const src of [config, specialMap]) {
    if (!src) continue;
    for (const key of ['bos_token', 'eos_token', 'unk_token', 'pad_token', 'sep_token', 'cls_token', 'mask_token']) {
      const c = tokenContent(src[key]);
      if (c !== null) specialContents.add(c);
    }
    const extra = src.additional_special_tokens;
    if (Array.isArray(extra))
      for (const t of extra) {
        const c = tokenContent(t);
        if (c !== null) specialContents.add(c);
      }
  }
  if (addedJson) {
    for (const [content, id] of Object.entries(addedJson)) {
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) {
        throw new TokenizerError(
          `${join(dir, 'added_tokens.json')}: ${JSON.stringify(content)} has invalid id ${JSON.stringify(id)}`,
        );
      }
      if (added.has(id)) continue;
      const special = specialContents.has(content);
      added.set(id, { id, content, special, lstrip: false, rstrip: false, singleWord: false, normalized: !special });
    }
  }
  for (const t of added.values()) if (specialContents.has(t.content)) t.special = true;

  const sp = specialTokensFrom(config, specialMap);
  const spec: ByteLevelBpeSpec = {
    source: dir,
    mergesSource: mergesFile,
    vocab,
    merges,
    addedTokens: [...added.values()],
    normalizer: isGpt2 ? null : (s) => s.normalize('NFC'),
    preTokenizer: isGpt2
      ? []
      : [{ type: 'split', regex: compilePattern(QWEN2_PRETOKENIZE_PATTERN, dir), behavior: 'Isolated', invert: false }],
    byteLevel: { addPrefixSpace: isGpt2 && config?.add_prefix_space === true, useRegex: isGpt2 },
    ignoreMerges: false,
    bosToken: sp.bos,
    eosToken: sp.eos,
    padToken: sp.pad,
    unkToken: sp.unk,
    postProcessor: null,
    addBosToken: sp.addBos,
    addEosToken: sp.addEos,
    cleanUpTokenizationSpaces: sp.cleanUp,
  };
  return new ByteLevelBpeTokenizer(spec);
}

/**
 * Load a byte-level BPE tokenizer from a checkpoint folder: `tokenizer.json` when present (with the
 * `tokenizer_config.json` / `special_tokens_map.json` beside it for BOS/EOS/pad), else `vocab.json` + `merges.txt`.
 */
export async function loadBpeTokenizer(dir: string): Promise<ByteLevelBpeTokenizer> {
  const { join } = await files.get();
  const jsonFile = join(dir, 'tokenizer.json');
  if (await exists(jsonFile)) {
    const [json, config, specialMap] = await Promise.all([
      readJson(jsonFile),
      readOptionalJson(join(dir, 'tokenizer_config.json')),
      readOptionalJson(join(dir, 'special_tokens_map.json')),
    ]);
    return byteLevelBpeFromTokenizerJson(json, jsonFile, config, specialMap);
  }
  const haveVocab = await exists(join(dir, 'vocab.json'));
  const haveMerges = await exists(join(dir, 'merges.txt'));
  if (!haveVocab && !haveMerges) {
    throw new TokenizerError(
      `${dir}: no tokenizer.json and no vocab.json + merges.txt (not a byte-level BPE tokenizer folder)`,
    );
  }
  if (!haveVocab) throw new TokenizerError(`${join(dir, 'vocab.json')}: missing (merges.txt is there)`);
  if (!haveMerges) throw new TokenizerError(`${join(dir, 'merges.txt')}: missing (vocab.json is there)`);
  return loadFromSlowFiles(dir);
}
