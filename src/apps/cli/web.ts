/** `internvl web [<model-dir>...]`: the in-browser demo page, served locally. */
import { StorageError } from '../../core/errors.js';
import { parseCommandArgs } from './args.js';
import type { Command } from './registry.js';

export const webCommand: Command = {
  name: 'web',
  summary: 'serve the in-browser demo page (the library on onnxruntime-web; models run in the tab)',
  async run(args) {
    const parsed = parseCommandArgs(
      {
        command: 'web',
        synopsis: 'web [options] [<model-dir>...]',
        description: `Serves the demo page: load a model by URL (a Hub repo id org/name, or a folder given here, shared as
/models/<name>/), drop an image, chat with the answer streaming in, or take its InternViT features. Everything runs
in the browser tab (onnxruntime-web: WebGPU when the browser has an adapter, else wasm); this process only serves
files. Stops on Ctrl-C.`,
        options: {
          host: { type: 'string', value: 'addr', help: 'address to listen on', default: '127.0.0.1' },
          port: { type: 'string', value: 'n', help: 'port (0 picks a free one)', default: 8080 },
        },
        positionals: { min: 0, max: Infinity },
      },
      args,
    );
    if (!parsed) return 0;
    const { startDemoServer } = await import('../browser/demo.js');
    const server = await startDemoServer({
      host: parsed.string('host'),
      port: parsed.integer('port', { min: 0, max: 65535 }),
      models: parsed.positionals,
    }).catch((error: NodeJS.ErrnoException) => {
      throw new StorageError(
        `cannot listen on ${parsed.string('host')}:${parsed.string('port')} (${error.code ?? error.message})`,
      );
    });
    process.stdout.write(`internvl web: ${server.origin}/index.html\n`);
    for (const model of server.models) process.stdout.write(`  model ${model}/\n`);
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    await server.close();
    return 0;
  },
};
