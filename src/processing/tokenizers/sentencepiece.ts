/**
 * SentencePiece in pure TypeScript: the `.model` protobuf is decoded by hand, text is normalized and segmented the
 * way the sentencepiece library does it (BPE exactly; unigram as a Viterbi search), and a Hugging Face style layer on
 * top honours `tokenizer_config.json` (BOS/EOS flags, special and added tokens, the slow LlamaTokenizer `legacy` mode).
 */
import { files } from '../../core/io.js';
import { readOptionalJsonObject } from '../../core/json.js';
import { TokenizerError } from '../../core/errors.js';
import type { DecodeOptions, EncodeOptions, Tokenizer } from './tokenizer.js';
import { PriorityQueue } from './priority_queue.js';
import { cleanUpTokenization } from './cleanup.js';

// ---------------------------------------------------------------------------------------------------------------
// ModelProto

export const PieceType = {
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;
export type PieceType = (typeof PieceType)[keyof typeof PieceType];

export const ModelType = { UNIGRAM: 1, BPE: 2, WORD: 3, CHAR: 4 } as const;
export type ModelType = (typeof ModelType)[keyof typeof ModelType];

export interface SentencePieceEntry {
  piece: string;
  score: number;
  type: PieceType;
}

/** The TrainerSpec fields that matter for encoding and decoding (defaults as in sentencepiece_model.proto). */
export interface TrainerSpec {
  modelType: ModelType;
  vocabSize: number;
  byteFallback: boolean;
  splitDigits: boolean;
  treatWhitespaceAsSuffix: boolean;
  allowWhitespaceOnlyPieces: boolean;
  unkId: number;
  bosId: number;
  eosId: number;
  padId: number;
  unkPiece: string;
  bosPiece: string;
  eosPiece: string;
  padPiece: string;
  /** What an `<unk>` decodes to; absent means the library default " ⁇ ". */
  unkSurface: string | null;
}

export interface NormalizerSpec {
  name: string;
  precompiledCharsmap: Uint8Array | null;
  addDummyPrefix: boolean;
  removeExtraWhitespaces: boolean;
  escapeWhitespaces: boolean;
}

export interface ModelProto {
  pieces: SentencePieceEntry[];
  trainerSpec: TrainerSpec;
  normalizerSpec: NormalizerSpec;
  denormalizerSpec: NormalizerSpec | null;
}

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LEN = 2;
const WIRE_START_GROUP = 3;
const WIRE_END_GROUP = 4;
const WIRE_FIXED32 = 5;

/** Thrown inside the wire reader; converted to a TokenizerError that names the file at the parse entry point. */
class WireFormatError extends Error {}

// ignoreBOM keeps a leading U+FEFF: the LLaMA vocabularies have it as a piece of its own.
const utf8Decoder = new TextDecoder('utf-8', { ignoreBOM: true });
const utf8Encoder = new TextEncoder();

class WireReader {
  private pos: number;
  /** Low and high 32 bits of the last varint, kept as fields so that reading one allocates nothing. */
  private lo = 0;
  private hi = 0;
  private readonly view: DataView;

  constructor(
    private readonly bytes: Uint8Array,
    start: number,
    private readonly end: number,
    private readonly what: string,
  ) {
    this.pos = start;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get done(): boolean {
    return this.pos >= this.end;
  }

  private fail(message: string): never {
    throw new WireFormatError(`${message} at byte ${this.pos} (in ${this.what})`);
  }

  private readVarintParts(): void {
    let lo = 0;
    let hi = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) this.fail('truncated varint');
      const b = this.bytes[this.pos++];
      const bits = b & 0x7f;
      const shift = 7 * i;
      if (shift < 28) lo |= bits << shift;
      else if (shift === 28) {
        lo |= (bits & 0x0f) << 28;
        hi |= bits >> 4;
      } else hi |= bits << (shift - 32);
      if ((b & 0x80) === 0) {
        this.lo = lo >>> 0;
        this.hi = hi >>> 0;
        return;
      }
    }
    this.fail('varint longer than 10 bytes');
  }

  /** An unsigned varint as a JS number (exact below 2^53, which covers every length and enum here). */
  uint(): number {
    this.readVarintParts();
    return this.hi * 0x1_0000_0000 + this.lo;
  }

  /** int32 fields are written sign-extended to 64 bits (pad_id = -1 takes 10 bytes); the low word is the value. */
  int32(): number {
    this.readVarintParts();
    return this.lo | 0;
  }

  bool(): boolean {
    this.readVarintParts();
    return this.lo !== 0 || this.hi !== 0;
  }

  float(): number {
    if (this.pos + 4 > this.end) this.fail('truncated fixed32');
    const v = this.view.getFloat32(this.pos, true);
    this.pos += 4;
    return v;
  }

  /** [start, end) of a length-delimited payload, bounds-checked. */
  lengthDelimited(): [number, number] {
    const len = this.uint();
    if (len > this.end - this.pos) this.fail(`length-delimited field of ${len} bytes runs past the end`);
    const start = this.pos;
    this.pos += len;
    return [start, this.pos];
  }

  bytesField(): Uint8Array {
    const [s, e] = this.lengthDelimited();
    return this.bytes.subarray(s, e);
  }

  string(): string {
    return utf8Decoder.decode(this.bytesField());
  }

  sub(what: string): WireReader {
    const [s, e] = this.lengthDelimited();
    return new WireReader(this.bytes, s, e, what);
  }

  /** Returns [fieldNumber, wireType]. */
  tag(): [number, number] {
    const key = this.uint();
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (field === 0) this.fail('field number 0');
    return [field, wire];
  }

  expect(wire: number, expected: number, field: number): void {
    if (wire !== expected) this.fail(`field ${field} has wire type ${wire}, expected ${expected}`);
  }

  skip(field: number, wire: number): void {
    switch (wire) {
      case WIRE_VARINT:
        this.readVarintParts();
        return;
      case WIRE_FIXED64:
        if (this.pos + 8 > this.end) this.fail('truncated fixed64');
        this.pos += 8;
        return;
      case WIRE_LEN:
        this.lengthDelimited();
        return;
      case WIRE_FIXED32:
        if (this.pos + 4 > this.end) this.fail('truncated fixed32');
        this.pos += 4;
        return;
      case WIRE_START_GROUP: {
        // Groups are obsolete but legal proto2; skip to the matching end tag.
        for (;;) {
          if (this.done) this.fail(`unterminated group ${field}`);
          const [f, w] = this.tag();
          if (w === WIRE_END_GROUP) {
            if (f !== field) this.fail(`group ${field} closed by ${f}`);
            return;
          }
          this.skip(f, w);
        }
      }
      default:
        this.fail(`invalid wire type ${wire} for field ${field}`);
    }
  }
}

function parsePiece(r: WireReader, index: number): SentencePieceEntry {
  let piece: string | null = null;
  let score = 0;
  let type: number = PieceType.NORMAL;
  while (!r.done) {
    const [field, wire] = r.tag();
    if (field === 1) {
      r.expect(wire, WIRE_LEN, field);
      piece = r.string();
    } else if (field === 2) {
      r.expect(wire, WIRE_FIXED32, field);
      score = r.float();
    } else if (field === 3) {
      r.expect(wire, WIRE_VARINT, field);
      type = r.int32();
    } else r.skip(field, wire);
  }
  if (piece === null || piece.length === 0) throw new WireFormatError(`piece ${index} has no text`);
  if (type < PieceType.NORMAL || type > PieceType.BYTE) {
    throw new WireFormatError(`piece ${index} (${JSON.stringify(piece)}) has unknown type ${type}`);
  }
  return { piece, score, type: type as PieceType };
}

function defaultTrainerSpec(): TrainerSpec {
  return {
    modelType: ModelType.UNIGRAM,
    vocabSize: 8000,
    byteFallback: false,
    splitDigits: false,
    treatWhitespaceAsSuffix: false,
    allowWhitespaceOnlyPieces: false,
    unkId: 0,
    bosId: 1,
    eosId: 2,
    padId: -1,
    unkPiece: '<unk>',
    bosPiece: '<s>',
    eosPiece: '</s>',
    padPiece: '<pad>',
    unkSurface: null,
  };
}

function parseTrainerSpec(r: WireReader): TrainerSpec {
  const t = defaultTrainerSpec();
  while (!r.done) {
    const [field, wire] = r.tag();
    const varint = (): void => r.expect(wire, WIRE_VARINT, field);
    const str = (): void => r.expect(wire, WIRE_LEN, field);
    switch (field) {
      case 3: {
        varint();
        const v = r.int32();
        if (v < ModelType.UNIGRAM || v > ModelType.CHAR) throw new WireFormatError(`unknown model_type ${v}`);
        t.modelType = v as ModelType;
        break;
      }
      case 4:
        varint();
        t.vocabSize = r.int32();
        break;
      case 24:
        varint();
        t.treatWhitespaceAsSuffix = r.bool();
        break;
      case 25:
        varint();
        t.splitDigits = r.bool();
        break;
      case 26:
        varint();
        t.allowWhitespaceOnlyPieces = r.bool();
        break;
      case 35:
        varint();
        t.byteFallback = r.bool();
        break;
      case 40:
        varint();
        t.unkId = r.int32();
        break;
      case 41:
        varint();
        t.bosId = r.int32();
        break;
      case 42:
        varint();
        t.eosId = r.int32();
        break;
      case 43:
        varint();
        t.padId = r.int32();
        break;
      case 44:
        str();
        t.unkSurface = r.string();
        break;
      case 45:
        str();
        t.unkPiece = r.string();
        break;
      case 46:
        str();
        t.bosPiece = r.string();
        break;
      case 47:
        str();
        t.eosPiece = r.string();
        break;
      case 48:
        str();
        t.padPiece = r.string();
        break;
      default:
        r.skip(field, wire);
    }
  }
  return t;
}

function parseNormalizerSpec(r: WireReader): NormalizerSpec {
  const n: NormalizerSpec = {
    name: '',
    precompiledCharsmap: null,
    addDummyPrefix: true,
    removeExtraWhitespaces: true,
    escapeWhitespaces: true,
  };
  while (!r.done) {
    const [field, wire] = r.tag();
    switch (field) {
      case 1:
        r.expect(wire, WIRE_LEN, field);
        n.name = r.string();
        break;
      case 2: {
        r.expect(wire, WIRE_LEN, field);
        const blob = r.bytesField();
        n.precompiledCharsmap = blob.length > 0 ? blob : null;
        break;
      }
      case 3:
        r.expect(wire, WIRE_VARINT, field);
        n.addDummyPrefix = r.bool();
        break;
      case 4:
        r.expect(wire, WIRE_VARINT, field);
        n.removeExtraWhitespaces = r.bool();
        break;
      case 5:
        r.expect(wire, WIRE_VARINT, field);
        n.escapeWhitespaces = r.bool();
        break;
      default:
        r.skip(field, wire);
    }
  }
  return n;
}

/** Decodes a serialized `ModelProto`; `source` (usually the file path) is named in every error. */
export function parseModelProto(bytes: Uint8Array, source: string): ModelProto {
  const pieces: SentencePieceEntry[] = [];
  let trainerSpec: TrainerSpec | null = null;
  let normalizerSpec: NormalizerSpec | null = null;
  let denormalizerSpec: NormalizerSpec | null = null;
  try {
    const r = new WireReader(bytes, 0, bytes.length, 'ModelProto');
    while (!r.done) {
      const [field, wire] = r.tag();
      if (field === 1) {
        r.expect(wire, WIRE_LEN, field);
        pieces.push(parsePiece(r.sub(`piece ${pieces.length}`), pieces.length));
      } else if (field === 2) {
        r.expect(wire, WIRE_LEN, field);
        trainerSpec = parseTrainerSpec(r.sub('trainer_spec'));
      } else if (field === 3) {
        r.expect(wire, WIRE_LEN, field);
        normalizerSpec = parseNormalizerSpec(r.sub('normalizer_spec'));
      } else if (field === 5) {
        r.expect(wire, WIRE_LEN, field);
        denormalizerSpec = parseNormalizerSpec(r.sub('denormalizer_spec'));
      } else r.skip(field, wire);
    }
  } catch (err) {
    if (err instanceof WireFormatError) {
      throw new TokenizerError(
        `${source}: not a valid SentencePiece model (corrupt or truncated protobuf: ${err.message})`,
      );
    }
    throw err;
  }
  if (pieces.length === 0) throw new TokenizerError(`${source}: not a valid SentencePiece model (it has no pieces)`);
  // Both specs are optional in the schema but sentencepiece always writes them after the pieces, so a file without
  // them was almost certainly cut short at a piece boundary.
  if (trainerSpec === null || normalizerSpec === null) {
    const missing = trainerSpec === null ? 'trainer_spec' : 'normalizer_spec';
    throw new TokenizerError(`${source}: not a valid SentencePiece model (no ${missing}; truncated file?)`);
  }
  return { pieces, trainerSpec, normalizerSpec, denormalizerSpec };
}

// ---------------------------------------------------------------------------------------------------------------
// Helpers: a longest-prefix matcher, UTF-8, byte pieces

/** Longest-prefix matching over a set of strings, keyed by UTF-16 code unit. */
class PrefixMatcher {
  private readonly root = new Map<number, PrefixNode>();
  size = 0;

  add(word: string): void {
    if (word.length === 0) return;
    let children = this.root;
    let node: PrefixNode | undefined;
    for (let i = 0; i < word.length; i++) {
      const c = word.charCodeAt(i);
      node = children.get(c);
      if (!node) {
        node = { terminal: false, children: new Map() };
        children.set(c, node);
      }
      children = node.children;
    }
    if (node && !node.terminal) {
      node.terminal = true;
      this.size++;
    }
  }

  /** Length (in code units) of the longest word that starts at `pos`, 0 when none does. */
  longestAt(text: string, pos: number): number {
    let children = this.root;
    let best = 0;
    for (let i = pos; i < text.length; i++) {
      const node = children.get(text.charCodeAt(i));
      if (!node) break;
      if (node.terminal) best = i + 1 - pos;
      children = node.children;
    }
    return best;
  }
}

interface PrefixNode {
  terminal: boolean;
  children: Map<number, PrefixNode>;
}

/** Length in code units of the code point at `pos` (a lone surrogate counts as one). */
function charLength(text: string, pos: number): number {
  const c = text.charCodeAt(pos);
  if (c >= 0xd800 && c <= 0xdbff && pos + 1 < text.length) {
    const d = text.charCodeAt(pos + 1);
    if (d >= 0xdc00 && d <= 0xdfff) return 2;
  }
  return 1;
}

function bytePieceValue(piece: string): number {
  const m = /^<0x([0-9A-F]{2})>$/.exec(piece);
  return m ? parseInt(m[1], 16) : -1;
}

/**
 * UTF-8 bytes to text the way sentencepiece's decoder does it: a structurally invalid byte becomes one U+FFFD and
 * consumes exactly one byte (TextDecoder would swallow maximal invalid subsequences instead).
 */
function decodeUtf8Bytes(bytes: readonly number[]): string {
  let out = '';
  let i = 0;
  const n = bytes.length;
  while (i < n) {
    const b0 = bytes[i];
    let len = 0;
    let cp = 0;
    let min = 0;
    if (b0 < 0x80) {
      len = 1;
      cp = b0;
    } else if (b0 >= 0xc2 && b0 <= 0xdf) {
      len = 2;
      cp = b0 & 0x1f;
      min = 0x80;
    } else if (b0 >= 0xe0 && b0 <= 0xef) {
      len = 3;
      cp = b0 & 0x0f;
      min = 0x800;
    } else if (b0 >= 0xf0 && b0 <= 0xf4) {
      len = 4;
      cp = b0 & 0x07;
      min = 0x10000;
    }
    let valid = len > 0 && i + len <= n;
    for (let k = 1; valid && k < len; k++) {
      const b = bytes[i + k];
      if ((b & 0xc0) !== 0x80) valid = false;
      else cp = (cp << 6) | (b & 0x3f);
    }
    if (valid && (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))) valid = false;
    if (valid) {
      out += String.fromCodePoint(cp);
      i += len;
    } else {
      out += '\ufffd';
      i += 1;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Precompiled charsmap (a darts-clone double-array trie over UTF-8 plus a NUL-separated replacement blob)

class PrecompiledCharsmap {
  private readonly units: Uint32Array;
  private readonly replacements: Uint8Array;
  private readonly cache = new Map<number, string>();

  constructor(blob: Uint8Array, source: string) {
    if (blob.length <= 4)
      throw new TokenizerError(`${source}: precompiled_charsmap is too short (${blob.length} bytes)`);
    const dv = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
    const trieSize = dv.getUint32(0, true);
    if (trieSize >= blob.length - 4 + 1 || trieSize % 4 !== 0) {
      throw new TokenizerError(
        `${source}: precompiled_charsmap trie size ${trieSize} does not fit its ${blob.length}-byte blob`,
      );
    }
    this.units = new Uint32Array(trieSize / 4);
    for (let i = 0; i < this.units.length; i++) this.units[i] = dv.getUint32(4 + 4 * i, true);
    this.replacements = blob.subarray(4 + trieSize);
  }

  private replacement(offset: number): string {
    let s = this.cache.get(offset);
    if (s === undefined) {
      let end = offset;
      while (end < this.replacements.length && this.replacements[end] !== 0) end++;
      s = utf8Decoder.decode(this.replacements.subarray(offset, end));
      this.cache.set(offset, s);
    }
    return s;
  }

  /**
   * The longest rule matching text at `pos`, walking the trie one UTF-8 byte at a time over whole code points:
   * returns [code units consumed, replacement] or null. Keys are whole UTF-8 strings, so matches end on code points.
   */
  longestMatch(text: string, pos: number): [number, string] | null {
    const units = this.units;
    if (units.length === 0) return null;
    const offsetOf = (unit: number): number => (unit >>> 10) << ((unit & (1 << 9)) >>> 6);
    let nodePos = offsetOf(units[0]);
    let bestLen = 0;
    let bestValue = 0;
    const buf = new Uint8Array(4);
    let i = pos;
    while (i < text.length) {
      const cl = charLength(text, i);
      const cp = text.codePointAt(i)!;
      const nbytes = encodeCodePoint(cp >= 0xd800 && cp <= 0xdfff ? 0xfffd : cp, buf);
      for (let k = 0; k < nbytes; k++) {
        const c = buf[k];
        nodePos ^= c;
        if (nodePos >= units.length) return bestLen > 0 ? [bestLen, this.replacement(bestValue)] : null;
        const unit = units[nodePos];
        // label(): the byte stored in the unit, plus the leaf flag bit that must be clear for an inner node.
        if ((unit & ((1 << 31) | 0xff)) >>> 0 !== c) return bestLen > 0 ? [bestLen, this.replacement(bestValue)] : null;
        nodePos ^= offsetOf(unit);
        if (k === nbytes - 1 && (unit >>> 8) & 1) {
          if (nodePos >= units.length) return bestLen > 0 ? [bestLen, this.replacement(bestValue)] : null;
          bestLen = i + cl - pos;
          bestValue = units[nodePos] & 0x7fffffff;
        }
      }
      i += cl;
    }
    return bestLen > 0 ? [bestLen, this.replacement(bestValue)] : null;
  }
}

function encodeCodePoint(cp: number, out: Uint8Array): number {
  if (cp < 0x80) {
    out[0] = cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = 0xc0 | (cp >> 6);
    out[1] = 0x80 | (cp & 0x3f);
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = 0xe0 | (cp >> 12);
    out[1] = 0x80 | ((cp >> 6) & 0x3f);
    out[2] = 0x80 | (cp & 0x3f);
    return 3;
  }
  out[0] = 0xf0 | (cp >> 18);
  out[1] = 0x80 | ((cp >> 12) & 0x3f);
  out[2] = 0x80 | ((cp >> 6) & 0x3f);
  out[3] = 0x80 | (cp & 0x3f);
  return 4;
}

// ---------------------------------------------------------------------------------------------------------------
// BPE agenda: candidate merges in a PriorityQueue ordered by `outranks`

interface MergeCandidate {
  left: number;
  right: number;
  score: number;
  /** Length of the merged text when the candidate was made; a mismatch later means it went stale. */
  size: number;
}

/** Higher score first; on equal scores the leftmost pair, which is what makes the result deterministic. */
function outranks(a: MergeCandidate, b: MergeCandidate): boolean {
  return a.score > b.score || (a.score === b.score && a.left < b.left);
}

// ---------------------------------------------------------------------------------------------------------------
// SentencePieceModel: the library's own semantics (no BOS/EOS, no added tokens)

const SPACE_SYMBOL = '\u2581';
const DEFAULT_UNK_SURFACE = ' \u2047 ';
/** Unigram: an unknown character costs this much less than the rarest piece. */
const UNIGRAM_UNK_PENALTY = 10;

export interface NormalizeOptions {
  /** Override the spec's add_dummy_prefix (HF non-legacy mode turns it off). */
  addDummyPrefix?: boolean;
  /**
   * Drop leading whitespace (default: the spec's remove_extra_whitespaces). HF's non-legacy LlamaTokenizer keeps one
   * leading space of a chunk by encoding it behind `<unk>`; false reproduces that.
   */
  stripLeadingWhitespace?: boolean;
}

export interface EncodedPiece {
  piece: string;
  id: number;
}

export class SentencePieceModel {
  readonly pieces: readonly SentencePieceEntry[];
  readonly trainerSpec: TrainerSpec;
  readonly normalizerSpec: NormalizerSpec;
  readonly unkId: number;
  /** NORMAL, USER_DEFINED and UNUSED pieces: the only ones a merge may produce. */
  private readonly pieceIds = new Map<string, number>();
  /** CONTROL, UNKNOWN and BYTE pieces, which take precedence when a finished symbol is looked up. */
  private readonly reservedIds = new Map<string, number>();
  private readonly userDefined = new PrefixMatcher();
  private readonly byteIds = new Int32Array(256).fill(-1);
  private readonly charsmap: PrecompiledCharsmap | null;
  /** Used when a model names an NFKC normalizer but ships no compiled rules. */
  private readonly nfkcFallback: boolean;
  private readonly denormalizer: SentencePieceModel | null = null;
  private readonly maxPieceLength: number;
  private readonly minScore: number;
  private readonly maxScore: number;

  constructor(
    proto: ModelProto,
    readonly source: string,
  ) {
    this.pieces = proto.pieces;
    this.trainerSpec = proto.trainerSpec;
    this.normalizerSpec = proto.normalizerSpec;
    let unkId = -1;
    let maxLen = 0;
    let minScore = Infinity;
    let maxScore = -Infinity;
    let bytesFound = 0;
    for (let id = 0; id < proto.pieces.length; id++) {
      const { piece, type, score } = proto.pieces[id];
      const normal = type === PieceType.NORMAL || type === PieceType.USER_DEFINED || type === PieceType.UNUSED;
      const map = normal ? this.pieceIds : this.reservedIds;
      if (map.has(piece))
        throw new TokenizerError(
          `${source}: piece ${JSON.stringify(piece)} is defined twice (ids ${map.get(piece)} and ${id})`,
        );
      map.set(piece, id);
      if (type === PieceType.USER_DEFINED) this.userDefined.add(piece);
      if (type === PieceType.UNKNOWN) {
        if (unkId >= 0) throw new TokenizerError(`${source}: more than one UNKNOWN piece (ids ${unkId} and ${id})`);
        unkId = id;
      }
      if (type === PieceType.BYTE) {
        if (!this.trainerSpec.byteFallback) {
          throw new TokenizerError(
            `${source}: byte piece ${JSON.stringify(piece)} found although byte_fallback is false`,
          );
        }
        const b = bytePieceValue(piece);
        if (b < 0) throw new TokenizerError(`${source}: invalid byte piece ${JSON.stringify(piece)} (id ${id})`);
        if (this.byteIds[b] < 0) bytesFound++;
        this.byteIds[b] = id;
      }
      if (normal) {
        if (piece.length > maxLen) maxLen = piece.length;
        if (type === PieceType.NORMAL) {
          if (score < minScore) minScore = score;
          if (score > maxScore) maxScore = score;
        }
      }
    }
    if (unkId < 0) throw new TokenizerError(`${source}: the model defines no UNKNOWN piece`);
    if (this.trainerSpec.byteFallback && bytesFound !== 256) {
      throw new TokenizerError(`${source}: byte_fallback is set but only ${bytesFound} of the 256 byte pieces exist`);
    }
    if (this.trainerSpec.modelType === ModelType.WORD || this.trainerSpec.modelType === ModelType.CHAR) {
      const kind = this.trainerSpec.modelType === ModelType.WORD ? 'WORD' : 'CHAR';
      throw new TokenizerError(`${source}: model_type ${kind} is not supported (only BPE and UNIGRAM)`);
    }
    this.unkId = unkId;
    this.maxPieceLength = maxLen;
    this.minScore = Number.isFinite(minScore) ? minScore : 0;
    this.maxScore = Number.isFinite(maxScore) ? maxScore : 0;
    const blob = this.normalizerSpec.precompiledCharsmap;
    this.charsmap = blob ? new PrecompiledCharsmap(blob, source) : null;
    this.nfkcFallback = !blob && /nfkc/i.test(this.normalizerSpec.name);
    if (proto.denormalizerSpec?.precompiledCharsmap) {
      // A denormalizer is a normalizer spec applied to decoded text with no whitespace handling of its own.
      const spec: NormalizerSpec = {
        ...proto.denormalizerSpec,
        addDummyPrefix: false,
        removeExtraWhitespaces: false,
        escapeWhitespaces: false,
      };
      this.denormalizer = new SentencePieceModel({ ...proto, normalizerSpec: spec, denormalizerSpec: null }, source);
    }
  }

  static fromBytes(bytes: Uint8Array, source: string): SentencePieceModel {
    return new SentencePieceModel(parseModelProto(bytes, source), source);
  }

  static async fromFile(path: string): Promise<SentencePieceModel> {
    return SentencePieceModel.fromBytes(await readModelFile(path), path);
  }

  get size(): number {
    return this.pieces.length;
  }

  /** The library's PieceToId: reserved pieces first, then ordinary ones, else the unk id. */
  pieceToId(piece: string): number {
    return this.reservedIds.get(piece) ?? this.pieceIds.get(piece) ?? this.unkId;
  }

  /** Like pieceToId but undefined instead of the unk id for a string that is no piece. */
  findPiece(piece: string): number | undefined {
    return this.reservedIds.get(piece) ?? this.pieceIds.get(piece);
  }

  idToPiece(id: number): string | undefined {
    return Number.isInteger(id) && id >= 0 && id < this.pieces.length ? this.pieces[id].piece : undefined;
  }

  typeOf(id: number): PieceType | undefined {
    return Number.isInteger(id) && id >= 0 && id < this.pieces.length ? this.pieces[id].type : undefined;
  }

  isControl(id: number): boolean {
    return this.typeOf(id) === PieceType.CONTROL;
  }

  isByte(id: number): boolean {
    return this.typeOf(id) === PieceType.BYTE;
  }

  /** The id the library reports for a special piece: -1 when the piece is missing or not of the expected type. */
  private specialId(piece: string, type: PieceType): number {
    const id = this.findPiece(piece);
    return id !== undefined && this.pieces[id].type === type ? id : -1;
  }

  get bosId(): number {
    return this.specialId(this.trainerSpec.bosPiece, PieceType.CONTROL);
  }

  get eosId(): number {
    return this.specialId(this.trainerSpec.eosPiece, PieceType.CONTROL);
  }

  get padId(): number {
    return this.specialId(this.trainerSpec.padPiece, PieceType.CONTROL);
  }

  /** One normalization step at `pos`: [replacement text, code units consumed]. */
  private normalizePrefix(text: string, pos: number): [string, number] {
    const ud = this.userDefined.size > 0 ? this.userDefined.longestAt(text, pos) : 0;
    if (ud > 0) return [text.slice(pos, pos + ud), ud];
    if (this.charsmap) {
      const m = this.charsmap.longestMatch(text, pos);
      if (m) return [m[1], m[0]];
    }
    const len = charLength(text, pos);
    let ch = text.slice(pos, pos + len);
    if (len === 1) {
      const c = ch.charCodeAt(0);
      // A lone surrogate is what malformed UTF-8 looks like once in a JS string.
      if (c >= 0xd800 && c <= 0xdfff) ch = '\ufffd';
    }
    if (this.nfkcFallback) ch = ch.normalize('NFKC');
    return [ch, len];
  }

  /** Text as the model sees it: normalized, whitespace escaped to U+2581, dummy prefix and extra spaces per spec. */
  normalize(text: string, options: NormalizeOptions = {}): string {
    if (text.length === 0) return '';
    const spec = this.normalizerSpec;
    const removeExtra = spec.removeExtraWhitespaces;
    const stripLeading = options.stripLeadingWhitespace ?? removeExtra;
    const addDummyPrefix = options.addDummyPrefix ?? spec.addDummyPrefix;
    const suffix = this.trainerSpec.treatWhitespaceAsSuffix;
    const space = spec.escapeWhitespaces ? SPACE_SYMBOL : ' ';
    let pos = 0;
    if (stripLeading) {
      while (pos < text.length) {
        const [norm, consumed] = this.normalizePrefix(text, pos);
        if (norm !== ' ') break;
        pos += consumed;
      }
      if (pos >= text.length) return '';
    }
    let out = '';
    if (!suffix && addDummyPrefix) out += space;
    let prevSpace = removeExtra && stripLeading;
    while (pos < text.length) {
      const [norm, consumed] = this.normalizePrefix(text, pos);
      let start = 0;
      if (prevSpace) while (start < norm.length && norm.charCodeAt(start) === 0x20) start++;
      if (start < norm.length) {
        const piece = start === 0 ? norm : norm.slice(start);
        out += spec.escapeWhitespaces ? piece.replaceAll(' ', SPACE_SYMBOL) : piece;
        prevSpace = piece.endsWith(' ');
      }
      pos += consumed;
      if (!removeExtra) prevSpace = false;
    }
    if (removeExtra) {
      let end = out.length;
      while (end >= space.length && out.endsWith(space, end)) end -= space.length;
      out = out.slice(0, end);
    }
    if (suffix && addDummyPrefix) out += space;
    return out;
  }

  /** Segments normalized text into pieces with their ids (before byte fallback). */
  private segment(normalized: string): EncodedPiece[] {
    if (normalized.length === 0) return [];
    return this.trainerSpec.modelType === ModelType.BPE ? this.segmentBpe(normalized) : this.segmentUnigram(normalized);
  }

  private segmentBpe(text: string): EncodedPiece[] {
    // Initial symbols: user-defined pieces whole (and never merged), everything else one code point each.
    const n = text.length;
    const start = new Int32Array(n);
    const end = new Int32Array(n);
    const frozen = new Uint8Array(n);
    let count = 0;
    for (let pos = 0; pos < n; ) {
      const ud = this.userDefined.size > 0 ? this.userDefined.longestAt(text, pos) : 0;
      const len = ud > 0 ? ud : charLength(text, pos);
      start[count] = pos;
      end[count] = pos + len;
      frozen[count] = ud > 0 ? 1 : 0;
      count++;
      pos += len;
    }
    const prev = new Int32Array(count);
    const next = new Int32Array(count);
    const alive = new Uint8Array(count).fill(1);
    for (let i = 0; i < count; i++) {
      prev[i] = i - 1;
      next[i] = i + 1 < count ? i + 1 : -1;
    }
    const pieces = this.pieces;
    const pieceIds = this.pieceIds;
    // An UNUSED piece may be passed through while merging but must not be emitted; remember how it was built.
    let unusedSplits: Map<string, [string, string]> | null = null;
    const queue = new PriorityQueue<MergeCandidate>(outranks);
    const consider = (left: number, right: number): void => {
      if (left < 0 || right < 0 || frozen[left] || frozen[right]) return;
      const merged = text.slice(start[left], end[right]);
      const id = pieceIds.get(merged);
      if (id === undefined) return;
      queue.push({ left, right, score: pieces[id].score, size: merged.length });
      if (pieces[id].type === PieceType.UNUSED) {
        unusedSplits ??= new Map();
        unusedSplits.set(merged, [text.slice(start[left], end[left]), text.slice(start[right], end[right])]);
      }
    };
    for (let i = 1; i < count; i++) consider(i - 1, i);
    while (queue.size > 0) {
      const top = queue.pop();
      const { left, right } = top;
      if (!alive[left] || !alive[right] || end[right] - start[left] !== top.size || next[left] !== right) continue;
      end[left] = end[right];
      next[left] = next[right];
      if (next[right] >= 0) prev[next[right]] = left;
      alive[right] = 0;
      consider(prev[left], left);
      consider(left, next[left]);
    }
    const out: EncodedPiece[] = [];
    const emit = (piece: string): void => {
      const id = this.pieceToId(piece);
      const split = pieces[id].type === PieceType.UNUSED ? unusedSplits?.get(piece) : undefined;
      if (split) {
        emit(split[0]);
        emit(split[1]);
      } else out.push({ piece, id });
    };
    for (let i = 0; i >= 0; i = next[i]) emit(text.slice(start[i], end[i]));
    return out;
  }

  /** Best-scoring segmentation (Viterbi); not checked against reference ids, as every shipped model here is BPE. */
  private segmentUnigram(text: string): EncodedPiece[] {
    const n = text.length;
    const best = new Float64Array(n + 1).fill(-Infinity);
    const from = new Int32Array(n + 1).fill(-1);
    const via = new Int32Array(n + 1).fill(-1);
    best[0] = 0;
    const unkScore = this.minScore - UNIGRAM_UNK_PENALTY;
    for (let pos = 0; pos < n; ) {
      const cl = charLength(text, pos);
      if (best[pos] === -Infinity) {
        pos += cl;
        continue;
      }
      let hasSingleChar = false;
      const maxEnd = Math.min(n, pos + this.maxPieceLength);
      for (let e = pos + 1; e <= maxEnd; e++) {
        const id = this.pieceIds.get(text.slice(pos, e));
        if (id === undefined) continue;
        const entry = this.pieces[id];
        if (entry.type === PieceType.UNUSED) continue;
        if (e - pos === cl) hasSingleChar = true;
        const score =
          entry.type === PieceType.USER_DEFINED
            ? utf8Encoder.encode(entry.piece).length * this.maxScore - 0.1
            : entry.score;
        const cand = best[pos] + score;
        if (from[e] < 0 || cand > best[e]) {
          best[e] = cand;
          from[e] = pos;
          via[e] = id;
        }
      }
      if (!hasSingleChar) {
        const cand = best[pos] + unkScore;
        if (from[pos + cl] < 0 || cand > best[pos + cl]) {
          best[pos + cl] = cand;
          from[pos + cl] = pos;
          via[pos + cl] = this.unkId;
        }
      }
      pos += cl;
    }
    const out: EncodedPiece[] = [];
    for (let e = n; e > 0; e = from[e]) out.push({ piece: text.slice(from[e], e), id: via[e] });
    return out.reverse();
  }

  /** Pieces with ids, unknown runs turned into byte pieces (byte_fallback) or merged into one unk. */
  encodePieces(text: string, options: NormalizeOptions = {}): EncodedPiece[] {
    const segments = this.segment(this.normalize(text, options));
    const out: EncodedPiece[] = [];
    let prevUnk = false;
    for (const seg of segments) {
      const isUnk = seg.id === this.unkId;
      if (isUnk && this.trainerSpec.byteFallback) {
        for (const b of utf8Encoder.encode(seg.piece)) {
          const id = this.byteIds[b];
          out.push({ piece: this.pieces[id].piece, id });
        }
      } else if (isUnk && prevUnk) {
        out[out.length - 1].piece += seg.piece;
      } else {
        out.push({ piece: seg.piece, id: seg.id });
      }
      prevUnk = isUnk;
    }
    return out;
  }

  /** Ids exactly as the sentencepiece library's `encode(text)` returns them (no BOS/EOS). */
  encode(text: string, options: NormalizeOptions = {}): number[] {
    return this.encodePieces(text, options).map((p) => p.id);
  }

  /**
   * The library's decode: control pieces vanish, `<unk>` becomes the unk surface, byte runs are reassembled as UTF-8,
   * U+2581 becomes a space and the dummy-prefix space at the start is dropped.
   */
  decode(ids: readonly number[]): string {
    const spec = this.normalizerSpec;
    const stripsLeadingSpace = spec.addDummyPrefix || spec.removeExtraWhitespaces;
    const unkSurface = this.trainerSpec.unkSurface ?? DEFAULT_UNK_SURFACE;
    let text = '';
    let bytes: number[] = [];
    let atStart = true;
    let leadingSpaceSeen = false;
    for (const id of ids) {
      const type = this.typeOf(id);
      if (type === undefined)
        throw new TokenizerError(
          `${this.source}: cannot decode id ${id} (vocabulary has ${this.pieces.length} pieces)`,
        );
      if (type === PieceType.BYTE) {
        bytes.push(bytePieceValue(this.pieces[id].piece));
        continue;
      }
      if (bytes.length > 0) {
        text += decodeUtf8Bytes(bytes);
        bytes = [];
      }
      if (leadingSpaceSeen || text.length > 0) atStart = false;
      leadingSpaceSeen = false;
      if (type === PieceType.CONTROL) continue;
      if (type === PieceType.UNKNOWN) {
        text += unkSurface;
        continue;
      }
      let piece = this.pieces[id].piece;
      if (atStart && stripsLeadingSpace && piece.startsWith(SPACE_SYMBOL)) {
        piece = piece.slice(SPACE_SYMBOL.length);
        // With remove_extra_whitespaces every leading space piece goes, not just the first.
        leadingSpaceSeen = !spec.removeExtraWhitespaces;
      }
      text += piece.replaceAll(SPACE_SYMBOL, ' ');
    }
    if (bytes.length > 0) text += decodeUtf8Bytes(bytes);
    return this.denormalizer ? this.denormalizer.normalize(text) : text;
  }
}

async function readModelFile(path: string): Promise<Uint8Array> {
  try {
    return await (await files.get()).readBytes(path);
  } catch (err) {
    throw new TokenizerError(`${path}: cannot read SentencePiece model (${(err as Error).message})`, { cause: err });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Hugging Face layer

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
