/** `internvl worker --queue redis://… --model <clip> --db <uri>`: embeds the batches `internvl index --queue` enqueues. */
import { parseCommandArgs } from './args.js';
import { MODEL_OPTIONS, resolveModelArg, sessionArgs, weightsOption } from './model_arg.js';
import type { Command } from './registry.js';
import { STORAGE_OPTIONS, storageOptionsArg } from './storage_arg.js';

export const workerCommand: Command = {
  name: 'worker',
  summary: "embed queued batches for 'internvl index --queue' (BullMQ over Redis)",
  async run(args) {
    const parsed = parseCommandArgs(
      {
        command: 'worker',
        synopsis: 'worker --queue <redis://host:port> --model <dir|id> --db <dir|uri> [options]',
        description: `Takes embedding jobs from the queue that 'internvl index --queue' fills, embeds the images (read from the paths in
the job: the files must be visible here under the same paths) and merge-inserts the rows into the table at --db.
Run any number of workers on any number of machines; a killed worker's job is taken over by another one once its
lock expires. Runs until interrupted (Ctrl-C / SIGTERM finishes the current job first).`,
        options: {
          ...MODEL_OPTIONS,
          queue: { type: 'string', value: 'url', help: 'redis://[user:password@]host:port[/db]', required: true },
          db: {
            type: 'string',
            value: 'dir|uri',
            help: "the table's database (the same one the indexer writes)",
            required: true,
          },
          ...STORAGE_OPTIONS,
          weights: weightsOption('fp32 or int8: must match the table'),
          batch: { type: 'string', value: 'n', help: 'images per forward pass', default: 8 },
          lock: {
            type: 'string',
            value: 'seconds',
            help: 'a job whose worker sent no heartbeat for this long is retried elsewhere',
            default: 30,
          },
        },
      },
      args,
    );
    if (!parsed) return 0;
    const queue = parsed.required('queue');
    const db = parsed.required('db');
    const weights = parsed.choice('weights', ['fp32', 'int8'] as const);
    const batchSize = parsed.integer('batch', { min: 1 });
    const lockMs = parsed.integer('lock', { min: 1 }) * 1000;
    const quiet = parsed.flag('quiet');
    const { startWorker } = await import('../search/queue.js');
    const worker = await startWorker(queue, {
      db,
      model: await resolveModelArg(parsed),
      weights,
      storageOptions: storageOptionsArg(parsed),
      batchSize,
      lockMs,
      session: sessionArgs(parsed),
      onLog: (message) => {
        if (!quiet) process.stderr.write(`worker: ${message}\n`);
      },
    });
    if (!quiet) process.stderr.write(`worker: waiting for jobs on ${queue}\n`);
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    await worker.close();
    return 0;
  },
};
