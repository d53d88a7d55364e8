/**
 * Rotary position embeddings (rotate-half convention) with the scalings the InternVL language models use:
 * default, linear, dynamic NTK (InternLM2), llama3, and longrope/su (Phi-3 128k). cos/sin are computed here per
 * step and fed to the graph, so one graph serves every scaling. Arithmetic follows transformers' float32 order
 * (float32 inverse frequencies, float32 products) so that positions far from 0 agree with the official code.
 */
import type { ConfigSection } from './config.js';

export type RopeScaling =
  | { type: 'default' }
  | { type: 'linear'; factor: number }
  | { type: 'dynamic'; factor: number; maxPositionEmbeddings: number }
  | {
      type: 'llama3';
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings: number;
    }
  | {
      type: 'longrope';
      shortFactor: number[];
      longFactor: number[];
      originalMaxPositionEmbeddings: number;
      attentionFactor: number;
    };

export function parseRopeScaling(section: ConfigSection, maxPositionEmbeddings: number): RopeScaling {
  const scaling = section.optionalSection('rope_scaling') ?? section.optionalSection('rope_parameters');
  if (!scaling) return { type: 'default' };
  const type = scaling.optionalString('rope_type') ?? scaling.optionalString('type') ?? 'default';
  switch (type) {
    case 'default':
      return { type: 'default' };
    case 'linear':
      return { type: 'linear', factor: scaling.number('factor') };
    case 'dynamic':
      return { type: 'dynamic', factor: scaling.number('factor'), maxPositionEmbeddings };
    case 'llama3':
      return {
        type: 'llama3',
        factor: scaling.number('factor'),
        lowFreqFactor: scaling.number('low_freq_factor'),
        highFreqFactor: scaling.number('high_freq_factor'),
        originalMaxPositionEmbeddings: scaling.integer('original_max_position_embeddings'),
      };
    case 'su':
    case 'longrope': {
      const original = section.integer(
        'original_max_position_embeddings',
        scaling.integer('original_max_position_embeddings', maxPositionEmbeddings),
      );
      const factors = (key: string) => {
        const value = scaling.raw[key];
        if (!Array.isArray(value) || !value.every((v) => typeof v === 'number'))
          scaling.fail(key, 'must be a list of numbers');
        return value as number[];
      };
      const scale = maxPositionEmbeddings / original;
      const attentionFactor = scaling.has('attention_factor')
        ? scaling.number('attention_factor')
        : scale <= 1
          ? 1
          : Math.sqrt(1 + Math.log(scale) / Math.log(original));
      return {
        type: 'longrope',
        shortFactor: factors('short_factor'),
        longFactor: factors('long_factor'),
        originalMaxPositionEmbeddings: original,
        attentionFactor,
      };
    }
    default:
      return scaling.fail(
        'type',
        `rope scaling '${type}' is not supported (default, linear, dynamic, llama3, longrope/su)`,
      );
  }
}

const f32 = Math.fround;

export class RotaryEmbedding {
  private readonly baseInverseFrequencies: Float32Array;

  constructor(
    readonly headDim: number,
    readonly theta: number,
    readonly scaling: RopeScaling,
  ) {
    this.baseInverseFrequencies = this.inverseFrequencies(theta);
  }

  private inverseFrequencies(base: number, extFactors?: number[]): Float32Array {
    const half = this.headDim / 2;
    const out = new Float32Array(half);
    for (let i = 0; i < half; i++) {
      const power = f32(base ** f32((2 * i) / this.headDim));
      out[i] = f32(1 / (extFactors ? f32(extFactors[i] * power) : power));
    }
    return out;
  }

  /** Inverse frequencies and output scale for a step whose cache ends at `totalLength`. */
  private frequenciesFor(totalLength: number, maxPosition: number): { inv: Float32Array; scale: number } {
    const s = this.scaling;
    switch (s.type) {
      case 'default':
        return { inv: this.baseInverseFrequencies, scale: 1 };
      case 'linear':
        return { inv: this.baseInverseFrequencies.map((v) => f32(v / s.factor)), scale: 1 };
      case 'dynamic': {
        if (totalLength <= s.maxPositionEmbeddings) return { inv: this.baseInverseFrequencies, scale: 1 };
        const base =
          this.theta *
          ((s.factor * totalLength) / s.maxPositionEmbeddings - (s.factor - 1)) ** (this.headDim / (this.headDim - 2));
        return { inv: this.inverseFrequencies(base), scale: 1 };
      }
      case 'llama3': {
        const lowWavelength = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
        const highWavelength = s.originalMaxPositionEmbeddings / s.highFreqFactor;
        const inv = this.baseInverseFrequencies.map((freq) => {
          const wavelength = (2 * Math.PI) / freq;
          if (wavelength < highWavelength) return freq;
          if (wavelength > lowWavelength) return f32(freq / s.factor);
          const smooth =
            (s.originalMaxPositionEmbeddings / wavelength - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
          return f32((1 - smooth) * (freq / s.factor) + smooth * freq);
        });
        return { inv, scale: 1 };
      }
      case 'longrope': {
        const factors = maxPosition + 1 > s.originalMaxPositionEmbeddings ? s.longFactor : s.shortFactor;
        return { inv: this.inverseFrequencies(this.theta, factors), scale: s.attentionFactor };
      }
    }
  }

  /** cos/sin [N, headDim] for the given positions. */
  cosSin(positions: Int32Array, totalLength: number): { cos: Float32Array; sin: Float32Array } {
    let maxPosition = 0;
    for (const p of positions) maxPosition = Math.max(maxPosition, p);
    const { inv, scale } = this.frequenciesFor(totalLength, maxPosition);
    const half = this.rows(positions, inv, scale);
    const D = this.headDim;
    const cos = new Float32Array(positions.length * D);
    const sin = new Float32Array(positions.length * D);
    for (let n = 0; n < positions.length; n++) {
      for (const offset of [0, D / 2]) {
        cos.set(half.cos.subarray((n * D) / 2, ((n + 1) * D) / 2), n * D + offset);
        sin.set(half.sin.subarray((n * D) / 2, ((n + 1) * D) / 2), n * D + offset);
      }
    }
    return { cos, sin };
  }

  /**
   * Half-width cos/sin rows (rotate-half repeats them) for positions [0, length), computed once for a decoder, and
   * the row a position takes in a sequence whose step ends at `end`. Longrope has a second set of rows: it switches
   * to its long factors once a sequence passes `original_max_position_embeddings` (as transformers decides per step
   * from the largest position).
   */
  table(length: number): { cos: Float32Array; sin: Float32Array; row: (position: number, end: number) => number } {
    const positions = Int32Array.from({ length }, (_, i) => i);
    const s = this.scaling;
    if (s.type !== 'longrope') {
      const { inv, scale } = this.frequenciesFor(length, length - 1);
      return { ...this.rows(positions, inv, scale), row: (position) => position };
    }
    const short = this.frequenciesFor(length, 0);
    const long = this.frequenciesFor(length, s.originalMaxPositionEmbeddings);
    const a = this.rows(positions, short.inv, short.scale);
    const b = this.rows(positions, long.inv, long.scale);
    const join = (x: Float32Array, y: Float32Array) => {
      const out = new Float32Array(x.length + y.length);
      out.set(x);
      out.set(y, x.length);
      return out;
    };
    return {
      cos: join(a.cos, b.cos),
      sin: join(a.sin, b.sin),
      row: (position, end) => (end > s.originalMaxPositionEmbeddings ? length + position : position),
    };
  }

  private rows(positions: Int32Array, inv: Float32Array, scale: number): { cos: Float32Array; sin: Float32Array } {
    const half = this.headDim / 2;
    const cos = new Float32Array(positions.length * half);
    const sin = new Float32Array(positions.length * half);
    positions.forEach((position, n) => {
      for (let i = 0; i < half; i++) {
        const angle = f32(position * inv[i]);
        cos[n * half + i] = f32(Math.cos(angle) * scale);
        sin[n * half + i] = f32(Math.sin(angle) * scale);
      }
    });
    return { cos, sin };
  }
}
