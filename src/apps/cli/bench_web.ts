/** `internvl bench web`: a chat shape in headless Chromium on onnxruntime-web vs Node, same run (JSON on stdout). */
import { stringifySnakeCase } from '../../core/json.js';
import { parseCommandArgs, QUIET_OPTION, THREADS_OPTION } from './args.js';
import { configsArg } from './bench_chat.js';

/** Runs `internvl bench web` with the arguments after `web`; resolves to the exit code. */
export async function runBenchWeb(args: string[]): Promise<number> {
  const parsed = parseCommandArgs(
    {
      command: 'bench web',
      synopsis: 'bench web [options]',
      description: `Writes a random-weight bf16 checkpoint of a released InternVL-Chat shape and measures each configuration twice in
the same run: in headless Chromium on onnxruntime-web (the checkpoint served on 127.0.0.1 and read with range
requests, converted and quantized in the page; a fresh browser per configuration) and in Node (as 'bench chat').
Per side: load time, one 448 px tile through the vision encoder, prefill, greedy decoding tokens/s, peak memory
(the renderer's RSS in the browser). Also the size of the internvl-ts/web bundle. Prints JSON.`,
      options: {
        shape: { type: 'string', value: 'name', help: 'internvl2-1b or internvl2-2b', default: 'internvl2-1b' },
        configs: {
          type: 'string',
          value: 'list',
          help: 'comma-separated llm/vision formats, each of fp32, int8, int4, int4+int8',
          default: 'int4/fp32,int4/int8',
        },
        device: { type: 'string', value: 'd', help: 'wasm or webgpu', default: 'wasm' },
        threads: THREADS_OPTION,
        runs: { type: 'string', value: 'n', help: 'warm time-to-first-token runs after the cold one', default: 3 },
        'decode-tokens': { type: 'string', value: 'n', help: 'greedy tokens timed', default: 16 },
        'browser-only': { type: 'boolean', help: 'skip the Node measurements' },
        'work-dir': {
          type: 'string',
          value: 'dir',
          help: 'keep and reuse the checkpoint here (default: a temp folder)',
        },
        quiet: QUIET_OPTION,
      },
    },
    args,
  );
  if (!parsed) return 0;
  const { CHAT_SHAPES } = await import('../bench/chat_checkpoint.js');
  const { runWebBench } = await import('../bench/web.js');
  const shape = parsed.choice('shape', Object.keys(CHAT_SHAPES));
  const configs = await configsArg(parsed);
  const report = await runWebBench({
    shape,
    configs,
    device: parsed.choice('device', ['wasm', 'webgpu'] as const),
    threads: parsed.threads(),
    runs: parsed.integer('runs', { min: 1 }),
    decodeTokens: parsed.integer('decode-tokens', { min: 1 }),
    browserOnly: parsed.flag('browser-only'),
    workDir: parsed.string('work-dir'),
    log: parsed.flag('quiet') ? undefined : (message) => process.stderr.write(`${message}\n`),
  });
  process.stdout.write(`${stringifySnakeCase(report, undefined, 2)}\n`);
  return 0;
}
