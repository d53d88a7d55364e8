/** `internvl search --db <dir> "text" | --image q.jpg`: query a search index built by `internvl index`. */
import { parseCommandArgs, THREADS_OPTION } from './args.js';
import type { Command } from './registry.js';
import { STORAGE_OPTIONS, storageOptionsArg } from './storage_arg.js';

export const searchCommand: Command = {
  name: 'search',
  summary: "search an index built by 'internvl index' by text or by image",
  async run(args) {
    const parsed = parseCommandArgs(
      {
        command: 'search',
        synopsis: 'search --db <dir|uri> ("text" | --image <query image>) [options]',
        description: `Ranks the indexed images by cosine similarity to a text (any language the model's tokenizer takes) or to an
image, with the model and mode the table was built with. Prints rank, score and image path.`,
        options: {
          db: { type: 'string', value: 'dir|uri', help: 'database folder or object-store URI', required: true },
          ...STORAGE_OPTIONS,
          image: { type: 'string', value: 'file', help: 'query by image instead of text' },
          k: { type: 'string', value: 'n', help: 'results', default: 10 },
          where: {
            type: 'string',
            value: 'sql',
            help: `filter on the columns, e.g. "width >= 640" or "uri LIKE '%/cats/%'"`,
          },
          table: { type: 'string', value: 'name', help: 'table (needed when the database holds several)' },
          mode: { type: 'string', value: 'C|G', help: 'pick the table of this mode' },
          exact: { type: 'boolean', help: 'exact search even when the table has an ANN index' },
          refine: {
            type: 'string',
            value: 'n',
            help: "ANN: candidates rescored exactly per result (more: closer to exact search, slower; default: the store's)",
          },
          threads: THREADS_OPTION,
          json: {
            type: 'boolean',
            help: '{"query", "table", "results": [{rank, id, image, score, width, height, caption, metadata}]}',
          },
        },
        positionals: { min: 0, max: 1 },
      },
      args,
    );
    if (!parsed) return 0;
    const db = parsed.required('db');
    const image = parsed.string('image');
    const text = parsed.positionals[0];
    if ((image === undefined) === (text === undefined)) parsed.fail('give either a text query or --image, not both');
    const k = parsed.integer('k', { min: 1 });
    const mode = parsed.choice('mode', ['C', 'G'] as const);
    const { openIndex } = await import('../search/search_index.js');
    const index = await openIndex(db, {
      table: parsed.string('table'),
      mode,
      storageOptions: storageOptionsArg(parsed),
      session: { threads: parsed.threads() },
    });
    try {
      const query = image !== undefined ? { image } : { text: text! };
      const results = await index.search(query, {
        k,
        where: parsed.string('where'),
        exact: parsed.flag('exact'),
        refineFactor: parsed.integer('refine', { min: 1 }),
      });
      if (parsed.flag('json')) {
        process.stdout.write(`${JSON.stringify({ query, table: index.store.name, results })}\n`);
        return 0;
      }
      const { formatTable } = await import('../verify/compare.js');
      const rows = results.map((r) => [String(r.rank), r.score.toFixed(4), r.image]);
      process.stdout.write(`${formatTable(['rank', 'score', 'image'], rows, [true, true, false])}\n`);
      return 0;
    } finally {
      await index.close();
    }
  },
};
