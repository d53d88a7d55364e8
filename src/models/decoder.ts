/**
 * The decoder façade: per-sequence KV caches in preallocated buffers, shared by several sequences of different
 * lengths in one batched step. Callers say which sequence gets which tokens; positions, masks, RoPE rows and logit
 * rows are built here.
 *
 * Storage: per layer one key and one value buffer [maxSequences, kvHeads, capacity, headDim]; a sequence owns one
 * slot. A run covers the slots from the lowest to the highest one it names and feeds that range of the buffers to
 * the graph as `past_key/value.{i}` views (no copy: onnxruntime reads JavaScript memory in place). The graph returns
 * only the new positions' keys and values, which are written into the slots here, so a step moves O(new tokens)
 * through JavaScript whatever the context. (Fetching the graph's `present` tensors instead, even into preallocated
 * outputs, made onnxruntime-node copy every layer's whole buffer into fresh JavaScript memory on each step: 3.6 vs
 * 0.6 ms for one layer's attention at 1024 positions, 12.5 vs 1.3 ms at 8192.) Slots in the range that the run
 * does not name run as empty dummies and are left untouched.
 *
 * Two attention kinds share this storage: `gqa` (com.microsoft GroupQueryAttention, causal, per-row lengths in
 * `seqlens_k`), the default; `masked` (ONNX Attention with an additive bias over the whole buffer), for graphs whose
 * prefill needs a mask of its own (QLLaMA's bidirectional queries).
 */
import { InternalError, UsageError } from '../core/errors.js';
import { Tensor } from '../core/session.js';
import type { CausalLM } from './llm.js';

export type AttentionKind = 'gqa' | 'masked';

/** One sequence's cache inside a `BatchDecoder`. */
export interface Sequence {
  /** Positions held in the cache (prefix, prompt and generated tokens fed so far). */
  readonly length: number;
}

/** New positions for a sequence: token ids, or embeddings [n, hidden] (image features already spliced in). */
export type TokenInput = { ids: readonly number[] } | { embeds: Float32Array };

export interface PrefillOptions {
  /** Return the rows of every new position instead of the last one only. */
  allPositions?: boolean;
  /** `hidden` = the final-normed hidden states instead of the logits. */
  output?: 'logits' | 'hidden';
  /** The sequence's first n positions see each other both ways (masked graphs only). */
  bidirectional?: number;
  /**
   * The input's last n positions are padding: no position attends to them, their own outputs are still computed
   * (a right-padded batch row, as the official code runs it; masked graphs only).
   */
  padding?: number;
  /** Inputs of graphs built with extra inputs, for this run's [batch, seq], replacing the model's defaults. */
  extraFeeds?: (batch: number, seq: number) => Record<string, Tensor>;
}

/** Fixed input that every sequence starts with (QLLaMA's learned queries, with their vision states). */
export interface SequencePrefix {
  embeds: Float32Array;
  /** Passed on to the prefill that reads the prefix. */
  options: Omit<PrefillOptions, 'allPositions' | 'output'>;
}

export interface BatchDecoderOptions {
  /** Sequences held at once. */
  maxSequences: number;
  /** Positions per sequence (prompt + new tokens), at most the model's context. */
  maxLength: number;
  /**
   * Positions per sequence allocated at first (default `maxLength`); the buffers double (up to `maxLength`) when a
   * sequence needs more, so that a server sized for long requests holds only what its requests use.
   */
  initialLength?: number;
  prefix?: SequencePrefix;
}

class Slot implements Sequence {
  length = 0;
  constructor(
    readonly index: number,
    readonly owner: BatchDecoder,
  ) {}
}

/** A row of a run: how many positions its cache had and how many it adds. */
interface Extent {
  past: number;
  count: number;
}

/** A row of a run that feeds a sequence. */
interface Row extends Extent {
  slot: Slot;
}

export class BatchDecoder {
  readonly maxSequences: number;
  readonly maxLength: number;
  private keys: Float32Array[];
  private values: Float32Array[];
  /** Positions per sequence the buffers hold now. */
  private capacity: number;
  private readonly slots: Array<Slot | null>;
  private readonly rope: { cos: Tensor; sin: Tensor; row: (position: number, end: number) => number };
  private readonly prefix: SequencePrefix | undefined;
  /** Buffer views per slot range `first:count`, made once. */
  private readonly views = new Map<string, Record<string, Tensor>>();

  constructor(
    private readonly lm: CausalLM,
    options: BatchDecoderOptions,
  ) {
    const { maxSequences, maxLength } = options;
    const prefixLength = options.prefix ? options.prefix.embeds.length / lm.config.hiddenSize : 0;
    if (!Number.isInteger(maxSequences) || maxSequences < 1)
      throw new InternalError(`maxSequences must be a positive integer, not ${maxSequences}`);
    if (!Number.isInteger(maxLength) || maxLength < 1 || maxLength + prefixLength > lm.contextLength)
      throw new InternalError(
        `maxLength ${maxLength} (+ ${prefixLength} prefix positions) must be in [1, ${lm.contextLength}]`,
      );
    this.maxSequences = maxSequences;
    this.maxLength = maxLength + prefixLength;
    this.prefix = options.prefix;
    const { numHiddenLayers: L, numKeyValueHeads: kv, headDim: D } = lm.config;
    this.capacity = Math.min(this.maxLength, Math.max(1, (options.initialLength ?? maxLength) + prefixLength));
    const size = maxSequences * kv * this.capacity * D;
    this.keys = Array.from({ length: L }, () => new Float32Array(size));
    this.values = Array.from({ length: L }, () => new Float32Array(size));
    this.slots = new Array(maxSequences).fill(null);
    const table = lm.rotary.table(this.maxLength);
    this.rope = {
      cos: new Tensor('float32', table.cos, [table.cos.length / (D / 2), D / 2]),
      sin: new Tensor('float32', table.sin, [table.sin.length / (D / 2), D / 2]),
      row: table.row,
    };
  }

  /** Sequences currently held. */
  get size(): number {
    return this.slots.filter(Boolean).length;
  }

  /** A new empty sequence in the lowest free slot (throws when all are taken). */
  addSequence(): Sequence {
    const index = this.slots.indexOf(null);
    if (index < 0) throw new InternalError(`all ${this.maxSequences} sequences of the decoder are in use`);
    const slot = new Slot(index, this);
    this.slots[index] = slot;
    return slot;
  }

  /** Frees the sequence's slot for another one. */
  removeSequence(sequence: Sequence): void {
    const slot = this.own(sequence);
    this.slots[slot.index] = null;
  }

  /** `target`'s cache becomes a copy of `source`'s (beam search). */
  copySequence(source: Sequence, target: Sequence): void {
    const from = this.own(source);
    const to = this.own(target);
    if (from === to) return;
    const { numKeyValueHeads: kv, headDim: D } = this.lm.config;
    const span = from.length * D;
    for (const buffers of [this.keys, this.values])
      for (const buffer of buffers)
        for (let h = 0; h < kv; h++) {
          const src = (from.index * kv + h) * this.capacity * D;
          buffer.copyWithin((to.index * kv + h) * this.capacity * D, src, src + span);
        }
    to.length = from.length;
  }

  /**
   * Feeds a sequence's next positions (the prompt, or more of it) in one run; an empty sequence first reads the
   * decoder's prefix. Returns the last new position's logits [vocab] (or every new position's, [n, vocab]).
   */
  async prefill(sequence: Sequence, input: TokenInput, options: PrefillOptions = {}): Promise<Float32Array> {
    const slot = this.own(sequence);
    const H = this.lm.config.hiddenSize;
    let embeds = 'embeds' in input ? input.embeds : await this.lm.embedTokens(input.ids);
    if (embeds.length % H !== 0)
      throw new InternalError(`prefill embeddings of ${embeds.length} values are not [n, ${H}]`);
    let runOptions: PrefillOptions = options;
    let skip = 0;
    if (this.prefix && slot.length === 0) {
      const joined = new Float32Array(this.prefix.embeds.length + embeds.length);
      joined.set(this.prefix.embeds);
      joined.set(embeds, this.prefix.embeds.length);
      embeds = joined;
      skip = this.prefix.embeds.length / H;
      runOptions = { ...this.prefix.options, ...options };
    }
    const count = embeds.length / H;
    if (count === 0) throw new UsageError('cannot prefill an empty input');
    this.checkRoom(slot, count);
    const rows = [{ slot, past: slot.length, count }];
    const selected = runOptions.allPositions ? Array.from({ length: count - skip }, (_, i) => skip + i) : [count - 1];
    return this.run(rows, count, embeds, selected, runOptions);
  }

  /** One new token per sequence, in one batched run; returns each sequence's logits [vocab], in order. */
  async decode(sequences: readonly Sequence[], tokens: readonly number[]): Promise<Float32Array[]> {
    if (sequences.length !== tokens.length)
      throw new InternalError(`${sequences.length} sequences but ${tokens.length} tokens`);
    const slots = sequences.map((s) => this.own(s));
    if (new Set(slots).size !== slots.length) throw new InternalError('a sequence is named twice in one decode step');
    for (const slot of slots) {
      if (slot.length === 0) throw new InternalError('decode needs a prefilled sequence');
      this.checkRoom(slot, 1);
    }
    const logits = await this.run(
      slots.map((slot) => ({ slot, past: slot.length, count: 1 })),
      1,
      await this.lm.embedTokens(tokens),
      null,
      {},
    );
    const V = this.lm.config.vocabSize;
    return slots.map((_, i) => logits.subarray(i * V, (i + 1) * V));
  }

  private own(sequence: Sequence): Slot {
    if (!(sequence instanceof Slot) || sequence.owner !== this || this.slots[sequence.index] !== sequence)
      throw new InternalError('the sequence does not belong to this decoder (or was removed)');
    return sequence;
  }

  private checkRoom(slot: Slot, count: number): void {
    const needed = slot.length + count;
    if (needed > this.maxLength)
      throw new InternalError(
        `a sequence of ${slot.length} positions cannot take ${count} more (max ${this.maxLength})`,
      );
    if (needed > this.capacity) this.grow(Math.min(this.maxLength, Math.max(needed, 2 * this.capacity)));
  }

  /** Reallocates every buffer for `capacity` positions per sequence, keeping what the sequences hold. */
  private grow(capacity: number): void {
    const { numKeyValueHeads: kv, headDim: D } = this.lm.config;
    const held = this.slots.filter((slot): slot is Slot => slot !== null);
    const move = (old: Float32Array) => {
      const next = new Float32Array(this.maxSequences * kv * capacity * D);
      for (const slot of held)
        for (let h = 0; h < kv; h++) {
          const row = slot.index * kv + h;
          next.set(old.subarray(row * this.capacity * D, (row * this.capacity + slot.length) * D), row * capacity * D);
        }
      return next;
    };
    this.keys = this.keys.map(move);
    this.values = this.values.map(move);
    this.capacity = capacity;
    this.views.clear();
  }

  /**
   * One graph run over the slot range the rows cover. `embeds` holds the rows' new positions in order, S per row
   * (decode) or one row's (prefill); `selected`: flat positions of the one prefill row whose outputs are wanted, or
   * null for the last position of every row.
   */
  private async run(
    rows: Row[],
    S: number,
    embeds: Float32Array,
    selected: number[] | null,
    options: PrefillOptions,
  ): Promise<Float32Array> {
    const { hiddenSize: H, numHiddenLayers: L, numKeyValueHeads: kv, headDim: D } = this.lm.config;
    const first = Math.min(...rows.map((r) => r.slot.index));
    const B = Math.max(...rows.map((r) => r.slot.index)) - first + 1;
    // Every slot of the range, named or not: unnamed ones run as empty dummies whose results are dropped.
    const all: Extent[] = Array.from(
      { length: B },
      (_, b) => rows.find((r) => r.slot.index === first + b) ?? { past: 0, count: 0 },
    );
    const input = new Float32Array(B * S * H);
    rows.forEach((r, i) => input.set(embeds.subarray(i * S * H, (i + 1) * S * H), (r.slot.index - first) * S * H));
    const ropeRows = new BigInt64Array(B * S);
    all.forEach((r, b) => {
      const end = r.past + Math.max(r.count, 1);
      for (let s = 0; s < S; s++)
        ropeRows[b * S + s] = BigInt(this.rope.row(Math.min(r.past + s, this.maxLength - 1), end));
    });
    const logitRows = selected
      ? selected.map((s) => (rows[0].slot.index - first) * S + s)
      : rows.map((r) => (r.slot.index - first) * S + r.count - 1);
    const feeds: Record<string, Tensor> = {
      inputs_embeds: new Tensor('float32', input, [B, S, H]),
      rope_cos: this.rope.cos,
      rope_sin: this.rope.sin,
      rope_rows: new Tensor('int64', ropeRows, [B, S]),
      logit_indices: new Tensor('int64', BigInt64Array.from(logitRows, BigInt), [logitRows.length]),
      ...this.attentionFeeds(all, S, options),
      ...this.pastViews(first, B),
      ...(options.extraFeeds ?? this.lm.defaultFeeds)?.(B, S),
    };
    const output = options.output ?? 'logits';
    const result = await this.lm.run(feeds, [output, 'new_keys', 'new_values']);
    // new_keys/new_values: [L, B, S, kv·D]; row b's first `count` positions go to its slot after `past`.
    const newKeys = result.new_keys.data as Float32Array;
    const newValues = result.new_values.data as Float32Array;
    for (const r of rows) {
      const b = r.slot.index - first;
      for (let l = 0; l < L; l++)
        for (let s = 0; s < r.count; s++) {
          const src = ((l * B + b) * S + s) * kv * D;
          for (let h = 0; h < kv; h++) {
            const dst = ((r.slot.index * kv + h) * this.capacity + r.past + s) * D;
            this.keys[l].set(newKeys.subarray(src + h * D, src + (h + 1) * D), dst);
            this.values[l].set(newValues.subarray(src + h * D, src + (h + 1) * D), dst);
          }
        }
      r.slot.length = r.past + r.count;
    }
    return result[output].data as Float32Array;
  }

  private attentionFeeds(rows: Extent[], S: number, options: PrefillOptions): Record<string, Tensor> {
    const B = rows.length;
    const bidirectional = options.bidirectional ?? 0;
    const padding = options.padding ?? 0;
    if (this.lm.attention === 'gqa') {
      if (bidirectional > 0 || padding > 0)
        throw new InternalError('bidirectional or padded positions need a masked-attention graph');
      // seqlens_k = each row's total length − 1 (a dummy row counts as one position).
      const lengths = Int32Array.from(rows, (r) => r.past + Math.max(r.count, 1) - 1);
      let total = 0;
      for (const r of rows) total = Math.max(total, r.past + S);
      return {
        seqlens_k: new Tensor('int32', lengths, [B]),
        total_sequence_length: new Tensor('int32', Int32Array.of(total), []),
      };
    }
    // Keys: the whole buffer (valid below each row's past), then the S new positions.
    const T = this.capacity + S;
    const bias = new Float32Array(B * S * T).fill(MASKED);
    rows.forEach((r, b) => {
      for (let s = 0; s < S; s++) {
        const row = (b * S + s) * T;
        bias.fill(0, row, row + r.past);
        const position = r.past + s;
        const visible = position < bidirectional ? Math.max(bidirectional - r.past, s + 1) : s + 1;
        const real = Math.max(r.count - padding, 0);
        bias.fill(0, row + this.capacity, row + this.capacity + Math.min(visible, real));
      }
    });
    return { attention_bias: new Tensor('float32', bias, [B, 1, S, T]) };
  }

  private pastViews(first: number, B: number): Record<string, Tensor> {
    const key = `${first}:${B}`;
    let views = this.views.get(key);
    if (!views) {
      const { numKeyValueHeads: kv, headDim: D } = this.lm.config;
      const stride = kv * this.capacity * D;
      const view = (buffer: Float32Array) =>
        new Tensor('float32', buffer.subarray(first * stride, (first + B) * stride), [B, kv, this.capacity, D]);
      views = {};
      for (let i = 0; i < this.keys.length; i++) {
        views[`past_key.${i}`] = view(this.keys[i]);
        views[`past_value.${i}`] = view(this.values[i]);
      }
      this.views.set(key, views);
    }
    return views;
  }
}

/** The most negative float32, as transformers uses for masked scores (finite, so fully masked rows stay finite). */
const MASKED = -3.4028234663852886e38;
