/**
 * SentencePiece in pure TypeScript, with the library's own semantics (no BOS/EOS, no added tokens): text is
 * normalized and segmented the way the sentencepiece library does it (BPE exactly; unigram as a Viterbi search) over
 * the pieces of the `.model` file (sentencepiece_proto.ts). The Hugging Face layer on top is sentencepiece_hf.ts.
 */
import { files } from '../../core/io.js';
import { TokenizerError } from '../../core/errors.js';
import { PriorityQueue } from './priority_queue.js';
import {
  ModelType,
  parseModelProto,
  PieceType,
  type ModelProto,
  type NormalizerSpec,
  type SentencePieceEntry,
  type TrainerSpec,
} from './sentencepiece_proto.js';

// ignoreBOM keeps a leading U+FEFF: the LLaMA vocabularies have it as a piece of its own.
const utf8Decoder = new TextDecoder('utf-8', { ignoreBOM: true });
const utf8Encoder = new TextEncoder();

// ---------------------------------------------------------------------------------------------------------------
// Helpers: a longest-prefix matcher, UTF-8, byte pieces

/** Longest-prefix matching over a set of strings, keyed by UTF-16 code unit. */
export class PrefixMatcher {
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

export const SPACE_SYMBOL = '\u2581';
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
