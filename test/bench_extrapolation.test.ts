/** Benchmarks extrapolate whole-model times from cut graphs, and never report a negative time (issue 8, item 14). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { extrapolateToDepth } from '../src/apps/bench/extrapolate.js';

test('two depths give the whole model: shallow time + per-layer difference × remaining layers', () => {
  const result = extrapolateToDepth({ layers: 2, seconds: 1.5 }, { layers: 4, seconds: 2.5 }, 48);
  assert.equal(result.perLayerSeconds, 0.5);
  assert.equal(result.seconds, 1.5 + 0.5 * 46);
  assert.equal(result.contention, undefined);
  // From the embeddings alone (0 layers), as bench vision does.
  assert.deepEqual(extrapolateToDepth({ layers: 0, seconds: 0.1 }, { layers: 4, seconds: 0.9 }, 24), {
    seconds: 0.1 + 0.2 * 24,
    perLayerSeconds: 0.2,
  });
});

test('a deeper graph timed no slower than a shallower one is contention, not a negative time', () => {
  for (const deepSeconds of [1.2, 1.5]) {
    const result = extrapolateToDepth({ layers: 2, seconds: 1.5 }, { layers: 4, seconds: deepSeconds }, 48);
    assert.equal(result.seconds, null);
    assert.equal(result.perLayerSeconds, null);
    assert.match(
      result.contention ?? '',
      new RegExp(`^the 4-layer graph timed ${deepSeconds.toFixed(4)} s, the 2-layer one 1\\.5000 s: other processes`),
    );
  }
});

test('extrapolating to a graph that is not deeper is a bug', () => {
  assert.throws(
    () => extrapolateToDepth({ layers: 4, seconds: 1 }, { layers: 4, seconds: 2 }, 48),
    (error: Error) => error.name === 'InternalError' && /needs a deeper graph: 4 vs 4 layers/.test(error.message),
  );
});
