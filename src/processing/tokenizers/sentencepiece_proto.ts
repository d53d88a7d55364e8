/**
 * The SentencePiece `.model` file: a serialized `ModelProto` (sentencepiece_model.proto), read with
 * `@bufbuild/protobuf`'s wire reader. Only the fields that matter for encoding and decoding are kept; every other
 * field is skipped as the schema allows, and a corrupt or truncated file is a TokenizerError naming the file.
 */
import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';
import { TokenizerError } from '../../core/errors.js';

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

/** A malformed field, named by the message it is in; converted to a TokenizerError naming the file. */
class WireFormatError extends Error {}

/** Reads the fields of one (sub)message: a reader bounded by the message's own bytes. */
function readMessage(
  bytes: Uint8Array,
  what: string,
  field: (r: BinaryReader, no: number, wire: WireType) => void,
): void {
  const r = new BinaryReader(bytes);
  let start = 0;
  try {
    while (r.pos < r.len) {
      start = r.pos;
      const [no, wire] = r.tag();
      field(r, no, wire);
    }
    // Every read checks its own bounds; this catches a last value that ran past the end all the same.
    if (r.pos > r.len) throw new RangeError('premature EOF');
  } catch (error) {
    if (error instanceof WireFormatError) throw error;
    // The reader's own errors (premature EOF, invalid varint, illegal tag) and DataView reads past the end.
    throw new WireFormatError(`${(error as Error).message} in the field at byte ${start} of ${what}`);
  }
}

function expectWire(wire: WireType, expected: WireType, no: number, what: string): void {
  if (wire !== expected)
    throw new WireFormatError(`field ${no} of ${what} has wire type ${wire}, expected ${expected}`);
}

function parsePiece(bytes: Uint8Array, index: number): SentencePieceEntry {
  const what = `piece ${index}`;
  const entry = { piece: '', score: 0, type: PieceType.NORMAL as number };
  readMessage(bytes, what, (r, no, wire) => {
    if (no === 1) {
      expectWire(wire, WireType.LengthDelimited, no, what);
      entry.piece = r.string();
    } else if (no === 2) {
      expectWire(wire, WireType.Bit32, no, what);
      entry.score = r.float();
    } else if (no === 3) {
      expectWire(wire, WireType.Varint, no, what);
      entry.type = r.int32();
    } else r.skip(wire, no);
  });
  if (entry.piece.length === 0) throw new WireFormatError(`piece ${index} has no text`);
  if (entry.type < PieceType.NORMAL || entry.type > PieceType.BYTE) {
    throw new WireFormatError(`piece ${index} (${JSON.stringify(entry.piece)}) has unknown type ${entry.type}`);
  }
  return entry as SentencePieceEntry;
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

/** The TrainerSpec fields kept, by field number: int32, bool or string, and where each goes. */
const TRAINER_FIELDS: Record<number, [kind: 'int32' | 'bool' | 'string', key: keyof TrainerSpec]> = {
  3: ['int32', 'modelType'],
  4: ['int32', 'vocabSize'],
  24: ['bool', 'treatWhitespaceAsSuffix'],
  25: ['bool', 'splitDigits'],
  26: ['bool', 'allowWhitespaceOnlyPieces'],
  35: ['bool', 'byteFallback'],
  40: ['int32', 'unkId'],
  41: ['int32', 'bosId'],
  42: ['int32', 'eosId'],
  43: ['int32', 'padId'],
  44: ['string', 'unkSurface'],
  45: ['string', 'unkPiece'],
  46: ['string', 'bosPiece'],
  47: ['string', 'eosPiece'],
  48: ['string', 'padPiece'],
};

function parseTrainerSpec(bytes: Uint8Array): TrainerSpec {
  const t = defaultTrainerSpec();
  const fields = t as unknown as Record<string, unknown>;
  readMessage(bytes, 'trainer_spec', (r, no, wire) => {
    const known = TRAINER_FIELDS[no];
    if (!known) return void r.skip(wire, no);
    const [kind, key] = known;
    expectWire(wire, kind === 'string' ? WireType.LengthDelimited : WireType.Varint, no, 'trainer_spec');
    fields[key] = kind === 'int32' ? r.int32() : kind === 'bool' ? r.bool() : r.string();
  });
  if (t.modelType < ModelType.UNIGRAM || t.modelType > ModelType.CHAR)
    throw new WireFormatError(`unknown model_type ${t.modelType}`);
  return t;
}

function parseNormalizerSpec(bytes: Uint8Array, what: string): NormalizerSpec {
  const n: NormalizerSpec = {
    name: '',
    precompiledCharsmap: null,
    addDummyPrefix: true,
    removeExtraWhitespaces: true,
    escapeWhitespaces: true,
  };
  readMessage(bytes, what, (r, no, wire) => {
    if (no === 1 || no === 2) expectWire(wire, WireType.LengthDelimited, no, what);
    else if (no >= 3 && no <= 5) expectWire(wire, WireType.Varint, no, what);
    if (no === 1) n.name = r.string();
    else if (no === 2) {
      const blob = r.bytes();
      n.precompiledCharsmap = blob.length > 0 ? blob : null;
    } else if (no === 3) n.addDummyPrefix = r.bool();
    else if (no === 4) n.removeExtraWhitespaces = r.bool();
    else if (no === 5) n.escapeWhitespaces = r.bool();
    else r.skip(wire, no);
  });
  return n;
}

/** Decodes a serialized `ModelProto`; `source` (usually the file path) is named in every error. */
export function parseModelProto(bytes: Uint8Array, source: string): ModelProto {
  const specs: Record<'trainerSpec', TrainerSpec | null> &
    Record<'normalizerSpec' | 'denormalizerSpec', NormalizerSpec | null> = {
    trainerSpec: null,
    normalizerSpec: null,
    denormalizerSpec: null,
  };
  const pieces: SentencePieceEntry[] = [];
  try {
    readMessage(bytes, 'ModelProto', (r, no, wire) => {
      if (no === 1 || no === 2 || no === 3 || no === 5) expectWire(wire, WireType.LengthDelimited, no, 'ModelProto');
      if (no === 1) pieces.push(parsePiece(r.bytes(), pieces.length));
      else if (no === 2) specs.trainerSpec = parseTrainerSpec(r.bytes());
      else if (no === 3) specs.normalizerSpec = parseNormalizerSpec(r.bytes(), 'normalizer_spec');
      else if (no === 5) specs.denormalizerSpec = parseNormalizerSpec(r.bytes(), 'denormalizer_spec');
      else r.skip(wire, no);
    });
  } catch (err) {
    if (err instanceof WireFormatError) {
      throw new TokenizerError(
        `${source}: not a valid SentencePiece model (corrupt or truncated protobuf: ${err.message})`,
      );
    }
    throw err;
  }
  const { trainerSpec, normalizerSpec, denormalizerSpec } = specs;
  if (pieces.length === 0) throw new TokenizerError(`${source}: not a valid SentencePiece model (it has no pieces)`);
  // Both specs are optional in the schema but sentencepiece always writes them after the pieces, so a file without
  // them was almost certainly cut short at a piece boundary.
  if (trainerSpec === null || normalizerSpec === null) {
    const missing = trainerSpec === null ? 'trainer_spec' : 'normalizer_spec';
    throw new TokenizerError(`${source}: not a valid SentencePiece model (no ${missing}; truncated file?)`);
  }
  return { pieces, trainerSpec, normalizerSpec, denormalizerSpec };
}
