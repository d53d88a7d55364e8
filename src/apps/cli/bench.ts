/** `internvl bench <target>`: benchmarks (JSON on stdout, progress on stderr). */
import { usageError, wrapText } from './args.js';
import type { Command } from './registry.js';

/** The targets, in the order the help lists them; each runs with the arguments after its name. */
const TARGETS: Array<{ name: string; summary: string; run: () => Promise<(args: string[]) => Promise<number>> }> = [
  {
    name: 'vision',
    summary: 'time the InternViT encoder on random weights of a released shape',
    run: async () => (await import('./bench_vision.js')).runBenchVision,
  },
  {
    name: 'chat',
    summary: 'time to first token and decoding speed of an InternVL-Chat shape (float32, int8, int4 weights)',
    run: async () => (await import('./bench_chat.js')).runBenchChat,
  },
  {
    name: 'clip',
    summary: 'InternVL-C/G image and text embeddings per second (InternVL-14B-224px shape)',
    run: async () => (await import('./bench_clip.js')).runBenchClip,
  },
  {
    name: 'serve',
    summary: 'the server under load: one stream vs concurrent streams (continuous batching), soak RSS',
    run: async () => (await import('./bench_serve.js')).runBenchServe,
  },
  {
    name: 'accuracy',
    summary: "each weight format's error against float32 on golden fixture folders",
    run: async () => (await import('./bench_accuracy.js')).runBenchAccuracy,
  },
  {
    name: 'web',
    summary: 'a chat shape in headless Chromium on onnxruntime-web vs Node, same run; the web bundle size',
    run: async () => (await import('./bench_web.js')).runBenchWeb,
  },
  {
    name: 'search',
    summary: 'search latency and ANN recall (100k/1M vectors), index overhead, 1 vs 2 queue workers',
    run: async () => (await import('./bench_search.js')).runBenchSearch,
  },
];

function help(): string {
  const width = Math.max(...TARGETS.map((t) => t.name.length)) + 2;
  const lines = TARGETS.map(({ name, summary }) => {
    const [first, ...rest] = wrapText(summary, 116 - width);
    return [`  ${name.padEnd(width)}${first}`, ...rest.map((l) => `  ${' '.repeat(width)}${l}`)].join('\n');
  });
  return `Usage: internvl bench <target> [options]\n\nTargets:\n${lines.join('\n')}\n\nSee 'internvl bench <target> --help'.\n`;
}

export const benchCommand: Command = {
  name: 'bench',
  summary: 'benchmarks: `bench vision` times the vision encoder, `bench chat` a chat model (JSON)',
  async run(args) {
    const [name, ...rest] = args;
    const names = TARGETS.map((t) => t.name).join(', ');
    if (name === undefined) throw usageError('bench', `missing target (${names})`);
    if (name === '--help' || name === '-h') {
      process.stdout.write(help());
      return 0;
    }
    const target = TARGETS.find((t) => t.name === name);
    if (!target) throw usageError('bench', `unknown target '${name}' (targets: ${names})`);
    return (await target.run())(rest);
  },
};
