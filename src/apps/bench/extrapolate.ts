/**
 * Whole-model times from graphs cut to a few layers. Every layer of a transformer costs the same, so a model of
 * L layers takes t(shallow) + (t(deep) − t(shallow)) · (L − shallow) / (deep − shallow). The two timings come from
 * separate runs, and on a shared machine other processes can slow the shallower one until the difference is zero
 * or negative: that measures contention, not the cost of a layer, so it is reported as contention with no time
 * rather than as a negative (or absurdly small) one.
 */
import { InternalError } from '../../core/errors.js';

/** The fastest warm time of a graph with `layers` layers (0 = the embeddings alone). */
export interface DepthTiming {
  layers: number;
  seconds: number;
}

export type Extrapolation =
  | { seconds: number; perLayerSeconds: number; contention?: undefined }
  | { seconds: null; perLayerSeconds: null; contention: string };

export function extrapolateToDepth(shallow: DepthTiming, deep: DepthTiming, layers: number): Extrapolation {
  if (!(deep.layers > shallow.layers))
    throw new InternalError(`extrapolation needs a deeper graph: ${deep.layers} vs ${shallow.layers} layers`);
  const perLayerSeconds = (deep.seconds - shallow.seconds) / (deep.layers - shallow.layers);
  if (!(perLayerSeconds > 0))
    return {
      seconds: null,
      perLayerSeconds: null,
      contention:
        `the ${deep.layers}-layer graph timed ${deep.seconds.toFixed(4)} s, the ${shallow.layers}-layer one ` +
        `${shallow.seconds.toFixed(4)} s: other processes slowed the shallower run, so no per-layer time can be ` +
        'derived; rerun on a quieter machine or with more --runs',
    };
  return { seconds: shallow.seconds + perLayerSeconds * (layers - shallow.layers), perLayerSeconds };
}
