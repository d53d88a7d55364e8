/**
 * The Hugging Face "slow" SentencePiece tokenizer (LlamaTokenizer and kin) over a SentencePieceModel: BOS/EOS as
 * `tokenizer_config.json` says, special and added tokens split out before the model sees the text, the `legacy`
 * handling of the space after them, and the loader that reads a checkpoint folder's tokenizer files.
 */
import { TokenizerError } from '../../core/errors.js';
import { files } from '../../core/io.js';
import { readOptionalJsonObject } from '../../core/json.js';
import { cleanUpTokenization } from './cleanup.js';
import { PrefixMatcher, SentencePieceModel, SPACE_SYMBOL } from './sentencepiece.js';
import type { DecodeOptions, EncodeOptions, Tokenizer } from './tokenizer.js';

/** An added or special token as HF's `AddedToken` describes it. */
export interface AddedTokenSpec {
  content: string;
  /** Taken from the SentencePiece vocabulary when absent, else appended after the last id. */
  id?: number;
  /** Special tokens are dropped by `skipSpecialTokens`. Default false. */
  special?: boolean;
  /** Swallow whitespace on the left / right of the token when it is matched in text. */
  lstrip?: boolean;
  rstrip?: boolean;
}

export interface SentencePieceTokenizerOptions {
  /** Prepend BOS when encoding with special tokens. Default true (LlamaTokenizer). */
  addBosToken?: boolean;
  /** Append EOS when encoding with special tokens. Default false. */
  addEosToken?: boolean;
  /**
   * HF slow LlamaTokenizer `legacy` (default true, as when a config leaves it unset): every text chunk between
   * special tokens is encoded on its own with the model's dummy prefix. false: one prefix space for the whole text
   * and none after a special token.
   */
  legacy?: boolean;
  /** Non-legacy only: start the text with a U+2581. Default true. */
  addPrefixSpace?: boolean;
  /** Special token strings; undefined takes the model's own piece for that id, null means none. */
  bosToken?: string | null;
  eosToken?: string | null;
  unkToken?: string | null;
  padToken?: string | null;
  additionalSpecialTokens?: readonly string[];
  addedTokens?: readonly AddedTokenSpec[];
  /** HF's clean_up_tokenization_spaces on decode (" ." → "." and the like). Default false. */
  cleanUpTokenizationSpaces?: boolean;
}

interface AddedToken {
  content: string;
  id: number;
  special: boolean;
  lstrip: boolean;
  rstrip: boolean;
}

type TextChunk = { kind: 'text'; text: string } | { kind: 'token'; token: AddedToken };

function isWhitespace(c: string): boolean {
  return /\s/u.test(c);
}

export class SentencePieceTokenizer implements Tokenizer {
  readonly model: SentencePieceModel;
  readonly addBosToken: boolean;
  readonly addEosToken: boolean;
  readonly legacy: boolean;
  readonly addPrefixSpace: boolean;
  readonly cleanUpTokenizationSpaces: boolean;
  readonly bosTokenId: number | null;
  readonly eosTokenId: number | null;
  readonly padTokenId: number | null;
  readonly unkTokenId: number | null;
  private readonly addedById = new Map<number, AddedToken>();
  private readonly addedByContent = new Map<string, AddedToken>();
  private readonly addedMatcher = new PrefixMatcher();
  private nextId: number;

  constructor(model: SentencePieceModel, options: SentencePieceTokenizerOptions = {}) {
    this.model = model;
    this.addBosToken = options.addBosToken ?? true;
    this.addEosToken = options.addEosToken ?? false;
    this.legacy = options.legacy ?? true;
    this.addPrefixSpace = options.addPrefixSpace ?? true;
    this.cleanUpTokenizationSpaces = options.cleanUpTokenizationSpaces ?? false;
    this.nextId = model.size;
    for (const t of options.addedTokens ?? []) this.register(t);
    const ts = model.trainerSpec;
    const modelPiece = (id: number): string | null => (id >= 0 ? (model.idToPiece(id) ?? null) : null);
    const special = (name: string | null | undefined, fallback: string | null): number | null => {
      const content = name === undefined ? fallback : name;
      if (content === null || content.length === 0) return null;
      return this.register({ content, special: true }).id;
    };
    this.bosTokenId = special(options.bosToken, modelPiece(ts.bosId));
    this.eosTokenId = special(options.eosToken, modelPiece(ts.eosId));
    this.unkTokenId = special(options.unkToken, modelPiece(model.unkId));
    this.padTokenId = special(options.padToken, modelPiece(ts.padId));
    for (const content of options.additionalSpecialTokens ?? []) special(content, null);
  }

  /** Loads a `.model` file; the options play the role of tokenizer_config.json. */
  static async fromModelFile(
    path: string,
    options: SentencePieceTokenizerOptions = {},
  ): Promise<SentencePieceTokenizer> {
    return new SentencePieceTokenizer(await SentencePieceModel.fromFile(path), options);
  }

  /** Adds a token (or marks an existing one special); ids follow HF: an existing piece keeps its id. */
  private register(spec: AddedTokenSpec): AddedToken {
    const existing = this.addedByContent.get(spec.content);
    if (existing) {
      if (spec.special) existing.special = true;
      if (spec.lstrip) existing.lstrip = true;
      if (spec.rstrip) existing.rstrip = true;
      return existing;
    }
    if (spec.content.length === 0) throw new TokenizerError(`${this.model.source}: an added token has empty content`);
    let id = spec.id ?? this.model.findPiece(spec.content);
    if (id === undefined) id = this.nextId;
    if (!Number.isInteger(id) || id < 0)
      throw new TokenizerError(
        `${this.model.source}: added token ${JSON.stringify(spec.content)} has invalid id ${id}`,
      );
    const token: AddedToken = {
      content: spec.content,
      id,
      special: spec.special ?? false,
      lstrip: spec.lstrip ?? false,
      rstrip: spec.rstrip ?? false,
    };
    this.addedByContent.set(token.content, token);
    if (!this.addedById.has(id)) this.addedById.set(id, token);
    this.addedMatcher.add(token.content);
    if (id >= this.nextId) this.nextId = id + 1;
    return token;
  }

  get vocabSize(): number {
    return this.nextId;
  }

  /** Every added and special token, by id. */
  get addedTokens(): ReadonlyMap<number, Readonly<AddedToken>> {
    return this.addedById;
  }

  /** Ids of the special tokens (BOS, EOS, UNK, PAD, additional specials, special added tokens). */
  get specialTokenIds(): Set<number> {
    const ids = new Set<number>();
    for (const t of this.addedById.values()) if (t.special) ids.add(t.id);
    return ids;
  }

  tokenToId(token: string): number | undefined {
    return this.addedByContent.get(token)?.id ?? this.model.findPiece(token);
  }

  idToToken(id: number): string | undefined {
    return this.addedById.get(id)?.content ?? this.model.idToPiece(id);
  }

  /** Cuts text at added tokens (the longest one at the earliest position), applying their lstrip/rstrip. */
  private splitOnAddedTokens(text: string): TextChunk[] {
    const chunks: TextChunk[] = [];
    if (this.addedMatcher.size === 0) return text.length > 0 ? [{ kind: 'text', text }] : [];
    let plainStart = 0;
    let pos = 0;
    while (pos < text.length) {
      const len = this.addedMatcher.longestAt(text, pos);
      if (len === 0) {
        pos++;
        continue;
      }
      const token = this.addedByContent.get(text.slice(pos, pos + len))!;
      let before = text.slice(plainStart, pos);
      if (token.lstrip) before = before.replace(/\s+$/u, '');
      if (before.length > 0) chunks.push({ kind: 'text', text: before });
      chunks.push({ kind: 'token', token });
      pos += len;
      if (token.rstrip) while (pos < text.length && isWhitespace(text[pos])) pos++;
      plainStart = pos;
    }
    if (plainStart < text.length) chunks.push({ kind: 'text', text: text.slice(plainStart) });
    return chunks;
  }

  /** Ids of the text alone: added tokens matched first, SentencePiece for the rest, no BOS/EOS. */
  encodeText(text: string): number[] {
    if (this.legacy || text.length === 0) {
      const ids: number[] = [];
      for (const chunk of this.splitOnAddedTokens(text)) {
        if (chunk.kind === 'token') ids.push(chunk.token.id);
        else for (const id of this.model.encode(chunk.text)) ids.push(id);
      }
      return ids;
    }
    // Non-legacy: a literal U+2581 in the text is a space, the text as a whole gets one prefix space, and no chunk
    // gets a dummy prefix of its own (so nothing appears between a special token and the word after it).
    let prepared = text.replaceAll(SPACE_SYMBOL, ' ');
    if (this.addPrefixSpace) prepared = SPACE_SYMBOL + prepared;
    const chunks = this.splitOnAddedTokens(prepared);
    const ids: number[] = [];
    const pieceStarts: boolean[] = [];
    for (const chunk of chunks) {
      if (chunk.kind === 'token') {
        ids.push(chunk.token.id);
        pieceStarts.push(false);
        continue;
      }
      const startsWithSpace = chunk.text.startsWith(SPACE_SYMBOL) || chunk.text.startsWith(' ');
      const pieces = this.model.encode(chunk.text, {
        addDummyPrefix: false,
        stripLeadingWhitespace: startsWithSpace ? false : undefined,
      });
      for (const id of pieces) {
        ids.push(id);
        pieceStarts.push(true);
      }
    }
    // A text that opens with a special token leaves a lone prefix-space piece in front of it; HF drops it.
    const prefixSpaceId = this.model.findPiece(SPACE_SYMBOL);
    if (ids.length > 1 && ids[0] === prefixSpaceId && pieceStarts[0] && !pieceStarts[1]) {
      const next = this.addedById.get(ids[1]);
      if (next?.special) ids.shift();
    }
    return ids;
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    const ids = this.encodeText(text);
    if (options.addSpecialTokens ?? true) {
      if (this.addBosToken && this.bosTokenId !== null) ids.unshift(this.bosTokenId);
      if (this.addEosToken && this.eosTokenId !== null) ids.push(this.eosTokenId);
    }
    return ids;
  }

  /**
   * Text of ids. Added and special tokens are written as their content (or dropped with `skipSpecialTokens`); runs of
   * ordinary pieces decode as SentencePiece decodes them. The dummy-prefix space is dropped at the start and, in
   * legacy mode, after each added token (where encoding put one), so that decode(encode(text)) gives text back.
   */
  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    const skip = options.skipSpecialTokens ?? false;
    let out = '';
    let run: number[] = [];
    let runAtSegmentStart = true;
    let segmentStart = true;
    const flush = (): void => {
      if (run.length === 0) return;
      out += this.decodeRun(run, runAtSegmentStart);
      run = [];
    };
    for (const id of ids) {
      const token = this.addedById.get(id);
      const controlPiece = token === undefined && this.model.isControl(id);
      if (token === undefined && !controlPiece) {
        if (this.model.typeOf(id) === undefined) {
          throw new TokenizerError(
            `${this.model.source}: cannot decode id ${id} (vocabulary has ${this.vocabSize} ids)`,
          );
        }
        if (run.length === 0) runAtSegmentStart = segmentStart;
        run.push(id);
        segmentStart = false;
        continue;
      }
      // Undeclared control pieces are invisible, as in the library's own decoder.
      if (controlPiece || (skip && token!.special)) continue;
      flush();
      out += token!.content;
      if (this.legacy) segmentStart = true;
    }
    flush();
    return this.cleanUpTokenizationSpaces ? cleanUpTokenization(out) : out;
  }

  private decodeRun(ids: number[], atSegmentStart: boolean): string {
    if (atSegmentStart) return this.model.decode(ids);
    // Not at a segment start: a leading U+2581 is a real space. Decoding behind a throwaway byte piece keeps the
    // library's start-of-text rule from eating it.
    const spaceGuard = this.model.findPiece('<0x20>');
    if (spaceGuard !== undefined && this.model.isByte(spaceGuard))
      return this.model.decode([spaceGuard, ...ids]).slice(1);
    const text = this.model.decode(ids);
    const first = this.model.idToPiece(ids[0]) ?? '';
    return first.startsWith(SPACE_SYMBOL) && !text.startsWith(' ') ? ` ${text}` : text;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Loading a checkpoint folder

type JsonObject = Record<string, unknown>;

/** A special-token value as HF writes it: a string, an AddedToken object, or null. */
function tokenContent(value: unknown, file: string, field: string): string | null | undefined {
  if (value === undefined) return undefined;
  if (value === null) return null;
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && typeof (value as JsonObject).content === 'string')
    return (value as JsonObject).content as string;
  throw new TokenizerError(`${file}: ${field} must be a string, an AddedToken object or null`);
}

function tokenFlags(value: unknown): { lstrip: boolean; rstrip: boolean } {
  if (value && typeof value === 'object') {
    const v = value as JsonObject;
    return { lstrip: v.lstrip === true, rstrip: v.rstrip === true };
  }
  return { lstrip: false, rstrip: false };
}

function optionalBool(cfg: JsonObject | null, key: string, file: string): boolean | undefined {
  const v = cfg?.[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean')
    throw new TokenizerError(`${file}: ${key} must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

const SPECIAL_TOKEN_KEYS = [
  'bos_token',
  'eos_token',
  'unk_token',
  'sep_token',
  'pad_token',
  'cls_token',
  'mask_token',
] as const;

/**
 * Loads `dir/tokenizer.model` with the folder's tokenizer_config.json, special_tokens_map.json and
 * added_tokens.json, resolving special tokens the way HF's slow tokenizers do.
 */
export async function loadSentencePieceTokenizer(dir: string): Promise<SentencePieceTokenizer> {
  const fs = await files.get();
  const modelPath = fs.join(dir, 'tokenizer.model');
  const model = await SentencePieceModel.fromFile(modelPath);
  const configPath = fs.join(dir, 'tokenizer_config.json');
  const mapPath = fs.join(dir, 'special_tokens_map.json');
  const addedPath = fs.join(dir, 'added_tokens.json');
  const [config, specialMap, addedJson] = await Promise.all([
    readOptionalJsonObject(configPath, { error: TokenizerError }),
    readOptionalJsonObject(mapPath, { error: TokenizerError }),
    readOptionalJsonObject(addedPath, { error: TokenizerError }),
  ]);

  // Special-token values: tokenizer_config.json, overridden by special_tokens_map.json when the config predates
  // added_tokens_decoder (HF reads the map only on that path).
  const values = new Map<string, { value: unknown; file: string }>();
  const hasDecoder = config !== null && config.added_tokens_decoder !== undefined;
  for (const key of [...SPECIAL_TOKEN_KEYS, 'additional_special_tokens']) {
    if (config && key in config) values.set(key, { value: config[key], file: configPath });
    if (!hasDecoder && specialMap && key in specialMap) values.set(key, { value: specialMap[key], file: mapPath });
  }
  const special = (key: string): string | null | undefined => {
    const v = values.get(key);
    return v ? tokenContent(v.value, v.file, key) : undefined;
  };

  const addedTokens: AddedTokenSpec[] = [];
  const additional: string[] = [];
  const extra = values.get('additional_special_tokens');
  if (extra && extra.value !== null) {
    if (!Array.isArray(extra.value))
      throw new TokenizerError(`${extra.file}: additional_special_tokens must be a list`);
    for (const item of extra.value) {
      const content = tokenContent(item, extra.file, 'additional_special_tokens');
      if (content) {
        additional.push(content);
        addedTokens.push({ content, special: true, ...tokenFlags(item) });
      }
    }
  }
  for (const key of SPECIAL_TOKEN_KEYS) {
    const v = values.get(key);
    if (v?.value && typeof v.value === 'object') {
      const content = tokenContent(v.value, v.file, key);
      if (content) addedTokens.push({ content, special: true, ...tokenFlags(v.value) });
    }
  }

  if (hasDecoder) {
    const decoder = config!.added_tokens_decoder;
    if (decoder === null || typeof decoder !== 'object' || Array.isArray(decoder)) {
      throw new TokenizerError(`${configPath}: added_tokens_decoder must be an object of id → token`);
    }
    for (const [key, entry] of Object.entries(decoder as JsonObject)) {
      const id = Number(key);
      const content = tokenContent(entry, configPath, `added_tokens_decoder[${key}]`);
      if (!Number.isInteger(id) || id < 0 || !content) {
        throw new TokenizerError(
          `${configPath}: added_tokens_decoder entry ${JSON.stringify(key)} is not an id with a token`,
        );
      }
      const e = entry as JsonObject;
      addedTokens.unshift({ content, id, special: e.special === true, ...tokenFlags(entry) });
    }
  }
  if (addedJson) {
    const specials = new Set<string>(additional);
    for (const key of SPECIAL_TOKEN_KEYS) {
      const c = special(key);
      if (c) specials.add(c);
    }
    for (const [content, id] of Object.entries(addedJson)) {
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) {
        throw new TokenizerError(`${addedPath}: token ${JSON.stringify(content)} has invalid id ${JSON.stringify(id)}`);
      }
      addedTokens.push({ content, id, special: specials.has(content) });
    }
  }

  // Assign explicit ids first so that tokens without one are appended after every known id.
  addedTokens.sort((a, b) => (a.id === undefined ? 1 : 0) - (b.id === undefined ? 1 : 0));
  return new SentencePieceTokenizer(model, {
    addBosToken: optionalBool(config, 'add_bos_token', configPath),
    addEosToken: optionalBool(config, 'add_eos_token', configPath),
    legacy: optionalBool(config, 'legacy', configPath),
    addPrefixSpace: optionalBool(config, 'add_prefix_space', configPath),
    cleanUpTokenizationSpaces: optionalBool(config, 'clean_up_tokenization_spaces', configPath),
    bosToken: special('bos_token'),
    eosToken: special('eos_token'),
    unkToken: special('unk_token'),
    padToken: special('pad_token'),
    additionalSpecialTokens: [
      ...additional,
      ...(['sep_token', 'cls_token', 'mask_token'] as const).map(special).filter((c): c is string => !!c),
    ],
    addedTokens,
  });
}
