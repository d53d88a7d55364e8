/**
 * Off-thread sessions (core/node/worker_session.ts): the same results as a session on the JavaScript thread, typed
 * errors from a failing run, and runs that leave the JavaScript thread free (an interval keeps firing during one)
 * where an in-thread run blocks it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GraphBuilder } from '../src/core/graph.js';
import { RuntimeError } from '../src/core/errors.js';
import { createSession, Tensor } from '../src/core/session.js';

/** x·x repeated: [n, n] float32 matmuls, enough work for the JavaScript thread to notice. */
function powerGraph(rounds: number): GraphBuilder {
  const g = new GraphBuilder('power', null);
  const x = g.input('x', 'float32', ['n', 'n']);
  let y = x;
  for (let i = 0; i < rounds; i++) y = g.node('Mul', [g.node('MatMul', [y, x]), g.input(`s${i}`, 'float32', [])]);
  g.output(g.node('Add', [y, g.node('Cast', [g.input('bias', 'int64', ['n'])], { to: 1 })]), 'y');
  return g;
}

function feeds(n: number, rounds: number) {
  const x = new Float32Array(n * n);
  for (let i = 0; i < x.length; i++) x[i] = ((i * 7919) % 97) / 97 - 0.5;
  const scale = Object.fromEntries(
    Array.from({ length: rounds }, (_, i) => [`s${i}`, new Tensor('float32', Float32Array.of(1 / n), [])]),
  );
  const bias = new Tensor(
    'int64',
    BigInt64Array.from({ length: n }, (_, i) => BigInt(i)),
    [n],
  );
  return { x: new Tensor('float32', x, [n, n]), bias, ...scale };
}

/** Interval ticks while `run` is pending. */
async function ticksDuring(run: () => Promise<unknown>): Promise<number> {
  let ticks = 0;
  const interval = setInterval(() => ticks++, 2);
  try {
    await run();
  } finally {
    clearInterval(interval);
  }
  return ticks;
}

test('an off-thread session gives the in-thread results and leaves the JavaScript thread free', async () => {
  const rounds = 12;
  const inThread = await createSession(powerGraph(rounds), { threads: 1 });
  const offThread = await createSession(powerGraph(rounds), { threads: 1, offThread: true });
  try {
    assert.equal(offThread.offThread, true);
    const small = feeds(8, rounds);
    const [a, b] = [await inThread.run(small), await offThread.run(small)];
    assert.deepEqual([...(b.y.data as Float32Array)], [...(a.y.data as Float32Array)]);
    assert.deepEqual(b.y.dims, [8, 8]);
    const big = feeds(512, rounds);
    await inThread.run(big);
    const blocked = await ticksDuring(() => inThread.run(big));
    const free = await ticksDuring(() => offThread.run(big));
    assert.ok(blocked <= 1, `the in-thread run blocked the thread (${blocked} ticks)`);
    assert.ok(free >= 3 && free > blocked, `${free} ticks during the off-thread run, ${blocked} in-thread`);
  } finally {
    await inThread.release();
    await offThread.release();
  }
});

test('an off-thread run that fails rejects with a typed error naming the graph; the session goes on', async () => {
  const session = await createSession(powerGraph(1), { offThread: true });
  try {
    const wrong = { ...feeds(4, 1), x: new Tensor('float32', new Float32Array(6), [2, 3]) };
    await assert.rejects(
      session.run(wrong),
      (e: unknown) => e instanceof RuntimeError && /graph power/.test(String(e)),
    );
    const ok = await session.run(feeds(4, 1));
    assert.equal((ok.y.data as Float32Array).length, 16);
  } finally {
    await session.release();
  }
});
