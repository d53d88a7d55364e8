/**
 * `internvl bench accuracy`: what each weight format costs in accuracy. Every fixture folder is verified once per
 * weight configuration (the runners of `internvl verify`, with the format's graph hooks), and each computed tensor
 * is compared with its golden: greedy ids and top-1 classes exactly (with the first differing step), float tensors
 * by max |a − b| / max |b|. The goldens are the official code in float64; float32 is within ~1e-6 of them and
 * decodes their ids (its own record shows it), so a quantized format's error against the goldens is its error
 * against float32 to that precision.
 *
 * A linear with fewer input columns than the quantizer's `minColumns` (64) stays float32, which on the tiny
 * fixture models is most of them: each record counts the linears a format actually quantized, and `allLinears`
 * quantizes every one (blocks of 16) to show the formats' error where nothing is left in float.
 */
import { linearHooks, type GraphBuilder } from '../../core/graph.js';
import { useQuantizedLinears } from '../../core/quantize.js';
import { quantizationFor, type WeightFormat } from '../../core/quantize/formats.js';
import type { ComparedTensor } from '../verify/compare.js';
import { Fixture } from '../verify/fixture.js';
import { findFixtureRunner, type GraphHooks } from '../verify/registry.js';
import { verifyFixture } from '../verify/index.js';
import { machineInfo } from './stats.js';

type Part = keyof GraphHooks;
type Weights = Partial<Record<Part, WeightFormat>>;

/** The configurations measured per kind of fixture (verify runner): each part alone, then the fast combination. */
const CONFIGS: Record<string, Weights[]> = {
  intern_vit: [{ vision: 'fp32' }, { vision: 'int8' }],
  internvl_chat: chatConfigs(),
  internvl_chat_e2e: chatConfigs(),
  // The clip commands' --weights applies to both towers.
  internvl_clip: [
    { vision: 'fp32', qllama: 'fp32' },
    { vision: 'int8', qllama: 'int8' },
  ],
  internvl_clip_e2e: [
    { vision: 'fp32', qllama: 'fp32' },
    { vision: 'int8', qllama: 'int8' },
  ],
};

function chatConfigs(): Weights[] {
  return [
    ...(['fp32', 'int8', 'int4', 'int4+int8'] as const).map((llm): Weights => ({ llm, vision: 'fp32' })),
    { llm: 'fp32', vision: 'int8' },
    { llm: 'int4+int8', vision: 'int8' },
  ];
}

export interface AccuracyOptions {
  dirs: string[];
  /** Quantize every linear (minColumns 16, blocks of 16) instead of the shipped formats' (minColumns 64, blocks 32). */
  allLinears?: boolean;
  threads?: number;
  log?: (message: string) => void;
}

export interface AccuracyRecord {
  fixture: string;
  weights: Weights;
  /** `Scope.linear` calls over all graphs built, and how many of them a quantized kernel took. */
  linears: { quantized: number; total: number };
  /** Greedy sequences (ids, top-1 classes, recalls): null where equal to the golden, else the first differing step (1-based). */
  firstDifferingStep: Record<string, number | null>;
  /** Max relative error of the float tensors, grouped: logits, embeddings/hidden states, probabilities. */
  maxRelError: { logits: number | null; embeddings: number | null; probs: number | null };
  /** Every compared tensor: max relative error, or for exact ones whether it is equal. */
  tensors: Record<string, number | boolean>;
  /** verify's verdict with float32's bounds (1e-4 relative): 0 within, 1 beyond. */
  withinFloat32Bounds: boolean;
}

export interface AccuracyReport {
  machine: Record<string, unknown>;
  allLinears: boolean;
  records: AccuracyRecord[];
  skipped: Array<{ dir: string; reason: string }>;
}

export async function benchAccuracy(options: AccuracyOptions): Promise<AccuracyReport> {
  const records: AccuracyRecord[] = [];
  const skipped: AccuracyReport['skipped'] = [];
  for (const dir of options.dirs) {
    const runner = findFixtureRunner(await Fixture.open(dir));
    const configs = runner ? CONFIGS[runner.name] : undefined;
    if (!configs) {
      skipped.push({ dir, reason: runner ? `no weights (runner ${runner.name})` : 'no verify runner' });
      continue;
    }
    for (const weights of configs) {
      const linears = { quantized: 0, total: 0 };
      const graphs: GraphHooks = {};
      for (const [part, format] of Object.entries(weights) as Array<[Part, WeightFormat]>)
        graphs[part] = countingHook(format, options.allLinears ?? false, linears);
      const report = await verifyFixture(dir, { threads: options.threads, graphs });
      const record = summarize(report.name, weights, linears, report.compared);
      options.log?.(`${report.name} ${describe(weights)}: ${JSON.stringify(record.firstDifferingStep)}`);
      records.push(record);
    }
  }
  return { machine: await machineInfo(), allLinears: options.allLinears ?? false, records, skipped };
}

/** The format's quantized linears, with every `Scope.linear` call counted (quantized or left float). */
function countingHook(
  format: WeightFormat,
  allLinears: boolean,
  count: { quantized: number; total: number },
): (g: GraphBuilder) => void {
  const quantization = quantizationFor(format);
  return (g) => {
    if (quantization)
      useQuantizedLinears(g, allLinears ? { ...quantization, minColumns: 16, blockSize: 16 } : quantization);
    const quantized = linearHooks.get(g);
    linearHooks.set(g, (scope, x, name) => {
      const output = quantized?.(scope, x, name);
      count.total++;
      if (output !== undefined) count.quantized++;
      return output;
    });
  };
}

const GREEDY = /generated_ids|top1|meta\.retrieval/;
const GROUPS = { logits: /logits|scores/, embeddings: /embeds|hidden|features|classifier/, probs: /probs/ } as const;

function summarize(
  fixture: string,
  weights: Weights,
  linears: AccuracyRecord['linears'],
  compared: ComparedTensor[],
): AccuracyRecord {
  const firstDifferingStep: AccuracyRecord['firstDifferingStep'] = {};
  const tensors: AccuracyRecord['tensors'] = {};
  const maxRelError: AccuracyRecord['maxRelError'] = { logits: null, embeddings: null, probs: null };
  for (const c of compared) {
    const exact = c.bound.value === 0;
    tensors[c.name] = exact ? c.ok : c.maxRelError;
    if (exact && GREEDY.test(c.name)) firstDifferingStep[c.name] = c.ok ? null : (c.firstMismatch ?? 0) + 1;
    if (exact || /pixel_values|tiles\./.test(c.name)) continue;
    for (const [group, pattern] of Object.entries(GROUPS) as Array<[keyof typeof GROUPS, RegExp]>)
      if (pattern.test(c.name)) maxRelError[group] = Math.max(maxRelError[group] ?? 0, c.maxRelError);
  }
  return {
    fixture,
    weights,
    linears,
    firstDifferingStep,
    maxRelError,
    tensors,
    withinFloat32Bounds: compared.every((c) => c.ok),
  };
}

function describe(weights: Weights): string {
  return Object.entries(weights)
    .map(([part, format]) => `${part} ${format}`)
    .join(', ');
}
