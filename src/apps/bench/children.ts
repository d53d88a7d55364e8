/**
 * Child processes of the benchmarks (and of the tests that start the same ones): a free loopback port, waiting for
 * a line a child prints, a graceful stop, and a throwaway redis-server.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { UsageError } from '../../core/errors.js';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Resolves with the output so far when `pattern` shows on the child's stderr or stdout; rejects if it exits first. */
export function waitForOutput(child: ChildProcess, pattern: RegExp, what: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const onData = (d: Buffer) => {
      text += d.toString();
      if (!pattern.test(text)) return;
      child.stderr?.off('data', onData);
      child.stdout?.off('data', onData);
      child.off('close', onClose);
      resolve(text);
    };
    const onClose = (code: number | null) =>
      reject(new Error(`${what} exited (${code}) before ${pattern}: ${text.slice(-2000)}`));
    child.stderr?.on('data', onData);
    child.stdout?.on('data', onData);
    child.once('close', onClose);
  });
}

/** Signals the child and waits until it has exited. */
export function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
  child.kill(signal);
  return closed;
}

/** A redis-server on a free loopback port, nothing persisted (files in `dir`); ready when this resolves. */
export async function startRedisServer(dir: string): Promise<{ url: string; port: number; process: ChildProcess }> {
  const port = await freePort();
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const missing = new Promise<never>((_, reject) =>
    child.once('error', (error) =>
      reject(new UsageError(`cannot start redis-server (${error.message}); install it (Debian: redis-server)`)),
    ),
  );
  await Promise.race([waitForOutput(child, /Ready to accept connections/, 'redis-server'), missing]);
  return { url: `redis://127.0.0.1:${port}`, port, process: child };
}
