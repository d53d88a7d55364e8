/**
 * One `bench chat` configuration in a fresh process, so that its peak RSS is its own: the parent forks this module,
 * sends the options, and the child measures them and replies with the result (or the error) over IPC.
 */
import { fork } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChatBenchOptions, ChatBenchResult } from './chat.js';

type ChildResult = ChatBenchResult | { loadSeconds: number };

export function runChild(options: ChatBenchOptions): Promise<ChildResult> {
  const { log, ...serializable } = options;
  return new Promise((resolve, reject) => {
    // The child's stdout goes to stderr: stdout carries only the JSON report.
    const child = fork(fileURLToPath(import.meta.url), ['--child'], { stdio: ['ignore', 2, 2, 'ipc'] });
    let result: ChildResult | undefined;
    let failure: string | undefined;
    child.on('message', (message: { result?: ChildResult; error?: string }) => {
      if (message.error) failure = message.error;
      else result = message.result;
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (result) resolve(result);
      else reject(new Error(failure ?? `benchmark child exited with ${signal ?? code}`));
    });
    child.send(serializable);
  });
}

const isChild =
  process.argv[2] === '--child' &&
  process.argv[1] !== undefined &&
  path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isChild) {
  process.once('message', async (options: ChatBenchOptions) => {
    try {
      const { runChatBenchmark } = await import('./chat.js');
      const result = await runChatBenchmark({ ...options, log: (m) => process.stderr.write(`${m}\n`) });
      process.send!({ result }, () => process.exit(0));
    } catch (error) {
      process.send!({ error: (error as Error).stack ?? String(error) }, () => process.exit(1));
    }
  });
}
