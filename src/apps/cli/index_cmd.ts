/** `internvl index <sources…> --model <clip> --db <dir>`: embed a collection into a search index (incremental). */
import { parseCommandArgs } from './args.js';
import { MODEL_OPTIONS, resolveModelArg, sessionArgs, weightsOption } from './model_arg.js';
import type { Command } from './registry.js';
import { STORAGE_OPTIONS, storageOptionsArg } from './storage_arg.js';

export const indexCommand: Command = {
  name: 'index',
  summary: 'embed images (folders, globs, webdataset shards, caption files) into a search index',
  async run(args) {
    const parsed = parseCommandArgs(
      {
        command: 'index',
        synopsis: 'index --model <dir|id> --db <dir|uri> [options] <folder|image|glob|shard.tar|captions.json(l)>...',
        description: `Embeds images with InternVL-C/G (the aligned embedding, L2-normalised) into a LanceDB table for 'internvl search'.
Folders are walked recursively; a .tar is a webdataset shard (its txt members are captions); a .json/.jsonl caption
file lists {image, caption}. Rerunning embeds only new or changed images (a moved file is recognised by its
content hash); a killed run loses at most the images since its last commit and a rerun continues. Unreadable
images are skipped with a warning. An ANN index (IVF_RQ) is built once the table is large enough.`,
        options: {
          ...MODEL_OPTIONS,
          db: {
            type: 'string',
            value: 'dir|uri',
            help: 'database folder, or an object-store URI (s3://bucket/path; see README)',
            required: true,
          },
          ...STORAGE_OPTIONS,
          mode: {
            type: 'string',
            value: 'C|G',
            help: 'InternVL-C (attention pooling) or InternVL-G (QLLaMA queries)',
            default: 'C',
          },
          weights: weightsOption('fp32 or int8'),
          table: { type: 'string', value: 'name', help: 'table name (default: <model folder name>_<mode>)' },
          batch: { type: 'string', value: 'n', help: 'images per forward pass', default: 8 },
          prune: { type: 'boolean', help: 'delete rows whose files are gone' },
          'commit-every': {
            type: 'string',
            value: 'n',
            help: 'rows per commit: the most a killed run loses',
            default: 256,
          },
          'ann-threshold': {
            type: 'string',
            value: 'n',
            help: 'build the ANN index from this many rows (default 100000)',
          },
          queue: {
            type: 'string',
            value: 'redis://…',
            help: "do not embed here: enqueue batches for 'internvl worker' processes (BullMQ over Redis); waits until the workers have embedded them all",
          },
          'job-size': { type: 'string', value: 'n', help: 'images per queue job', default: 16 },
          json: {
            type: 'boolean',
            help: 'the summary as JSON on stdout: {db, table, added, updated, moved, skipped, unreadable, removed, embedded, rows, seconds, images_per_second, ann_index}',
          },
        },
        positionals: { min: 1, max: Infinity },
      },
      args,
    );
    if (!parsed) return 0;
    const db = parsed.required('db');
    const mode = parsed.choice('mode', ['C', 'G'] as const);
    const weights = parsed.choice('weights', ['fp32', 'int8'] as const);
    const batchSize = parsed.integer('batch', { min: 1 });
    const annThreshold = parsed.integer('ann-threshold', { min: 256 });
    const queue = parsed.string('queue');
    const quiet = parsed.flag('quiet');
    const [{ openIndex }, { createProgressReporter }] = await Promise.all([
      import('../search/search_index.js'),
      import('../../core/progress.js'),
    ]);
    const index = await openIndex(db, {
      model: await resolveModelArg(parsed),
      mode,
      weights,
      table: parsed.string('table'),
      storageOptions: storageOptionsArg(parsed),
      session: sessionArgs(parsed),
    });
    const progress = createProgressReporter('indexing', { quiet, unit: 'items', itemName: 'images' });
    // Warnings show with --quiet too: a skipped image is not progress.
    const warn = (message: string) =>
      quiet ? process.stderr.write(`warning: ${message}\n`) : progress.log(`warning: ${message}`);
    let sink: import('../search/queue.js').QueueSink | undefined;
    let remote: import('../../core/progress.js').ProgressReporter | undefined;
    if (queue !== undefined) {
      const { QueueSink } = await import('../search/queue.js');
      remote = createProgressReporter('embedding (workers)', { quiet, unit: 'items', itemName: 'images' });
      sink = await QueueSink.connect(queue, index.store, {
        jobImages: parsed.integer('job-size', { min: 1 }),
        onProgress: (done, total) => remote?.update(done, total),
        onWarning: warn,
      });
    }
    let summary;
    try {
      summary = await index.add(parsed.positionals, {
        batchSize,
        prune: parsed.flag('prune'),
        commitRows: parsed.integer('commit-every', { min: 1 }),
        annThreshold,
        sink,
        onWarning: warn,
        onProgress: (done, total, note) => progress.update(done, total, note),
      });
    } finally {
      await index.close();
      await sink?.close();
    }
    remote?.finish();
    progress.finish();
    if (parsed.flag('json')) {
      const { imagesPerSecond, annIndex, ...counts } = summary;
      const json = { db, table: index.store.name, ...counts, images_per_second: imagesPerSecond, ann_index: annIndex };
      process.stdout.write(`${JSON.stringify(json)}\n`);
    } else {
      const s = summary;
      process.stdout.write(
        `${index.store.name}: added ${s.added}, updated ${s.updated}, moved ${s.moved}, skipped ${s.skipped} ` +
          `(unchanged), unreadable ${s.unreadable}, removed ${s.removed}; ${s.rows} rows` +
          `${s.annIndex ? ' (ANN index)' : ''}; ${s.seconds.toFixed(1)} s, ${s.imagesPerSecond.toFixed(1)} images/s\n`,
      );
    }
    return 0;
  },
};
