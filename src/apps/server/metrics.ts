/**
 * Prometheus text exposition of the server's counters, gauges and histograms, named as vLLM names its own
 * (`vllm:time_to_first_token_seconds` → `internvl:time_to_first_token_seconds`), with `http_requests_total` as
 * prometheus-fastapi-instrumentator (which vLLM uses) names it.
 */
type Labels = Record<string, string>;

const key = (labels: Labels) =>
  Object.entries(labels)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`)
    .join(',');

interface Family {
  help: string;
  type: 'counter' | 'gauge' | 'histogram';
  render(name: string): string[];
}

class Counter implements Family {
  readonly type = 'counter';
  private readonly values = new Map<string, number>();
  constructor(readonly help: string) {}
  inc(labels: Labels, by = 1): void {
    const k = key(labels);
    this.values.set(k, (this.values.get(k) ?? 0) + by);
  }
  render(name: string): string[] {
    return [...this.values].map(([k, v]) => `${name}{${k}} ${v}`);
  }
}

/** A value read when rendered: a gauge, or a counter kept elsewhere (the schedulers' step counts). */
class Reading implements Family {
  constructor(
    readonly help: string,
    private readonly read: () => Array<[Labels, number]>,
    readonly type: 'gauge' | 'counter' = 'gauge',
  ) {}
  render(name: string): string[] {
    return this.read().map(([labels, v]) => `${name}{${key(labels)}} ${v}`);
  }
}

class Histogram implements Family {
  readonly type = 'histogram';
  private readonly series = new Map<string, { counts: number[]; sum: number; count: number }>();
  constructor(
    readonly help: string,
    private readonly buckets: readonly number[],
  ) {}
  observe(labels: Labels, value: number): void {
    const k = key(labels);
    let s = this.series.get(k);
    if (!s) {
      s = { counts: this.buckets.map(() => 0), sum: 0, count: 0 };
      this.series.set(k, s);
    }
    this.buckets.forEach((b, i) => {
      if (value <= b) s.counts[i]++;
    });
    s.sum += value;
    s.count++;
  }
  render(name: string): string[] {
    const lines: string[] = [];
    for (const [k, s] of this.series) {
      const sep = k ? ',' : '';
      this.buckets.forEach((b, i) => {
        lines.push(`${name}_bucket{${k}${sep}le="${b}"} ${s.counts[i]}`);
      });
      lines.push(`${name}_bucket{${k}${sep}le="+Inf"} ${s.count}`);
      lines.push(`${name}_sum{${k}} ${s.sum}`);
      lines.push(`${name}_count{${k}} ${s.count}`);
    }
    return lines;
  }
}

const LATENCY_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 640];
const TOKEN_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2.5, 5];

/** A chat model's scheduler as the metrics read it. */
export interface QueueState {
  model: string;
  running: number;
  waiting: number;
  decodeSteps: number;
  decodedTokens: number;
  decodeSeconds: number;
  /** Visuals whose embeddings the model's cache held, and visuals it encoded (`VisualEmbeddingCache`). */
  visualCacheHits: number;
  visualCacheMisses: number;
}

export class Metrics {
  readonly promptTokens = new Counter('Prompt tokens processed.');
  readonly generationTokens = new Counter('Generated tokens.');
  readonly requestSuccess = new Counter('Finished generation requests, by finish reason.');
  readonly httpRequests = new Counter('HTTP requests by method, handler and status.');
  readonly timeToFirstToken = new Histogram('Time to first token, seconds.', LATENCY_BUCKETS);
  readonly interTokenLatency = new Histogram('Time between generated tokens, seconds.', TOKEN_BUCKETS);
  readonly queueTime = new Histogram('Time a request waited in the queue, seconds.', LATENCY_BUCKETS);
  readonly e2eLatency = new Histogram('End-to-end request latency, seconds.', LATENCY_BUCKETS);
  private readonly families: Array<[string, Family]>;

  constructor(queues: () => QueueState[]) {
    const read = (field: keyof Omit<QueueState, 'model'>) => () =>
      queues().map((q): [Labels, number] => [{ model_name: q.model }, q[field]]);
    this.families = [
      ['internvl:num_requests_running', new Reading('Generation requests running.', read('running'))],
      ['internvl:num_requests_waiting', new Reading('Requests waiting in the queue.', read('waiting'))],
      ['internvl:decode_steps_total', new Reading('Batched decode steps run.', read('decodeSteps'), 'counter')],
      [
        'internvl:decode_step_sequences_total',
        new Reading('Sequences decoded by those steps (÷ steps = mean batch size).', read('decodedTokens'), 'counter'),
      ],
      [
        'internvl:decode_step_seconds_total',
        new Reading(
          'Seconds the decode steps took (sequences ÷ seconds = decoding throughput).',
          read('decodeSeconds'),
          'counter',
        ),
      ],
      [
        'internvl:visual_cache_hits_total',
        new Reading(
          'Images and frames whose embeddings were cached (not encoded again).',
          read('visualCacheHits'),
          'counter',
        ),
      ],
      [
        'internvl:visual_cache_misses_total',
        new Reading('Images and frames the vision tower encoded.', read('visualCacheMisses'), 'counter'),
      ],
      ['internvl:prompt_tokens_total', this.promptTokens],
      ['internvl:generation_tokens_total', this.generationTokens],
      ['internvl:request_success_total', this.requestSuccess],
      ['internvl:time_to_first_token_seconds', this.timeToFirstToken],
      ['internvl:inter_token_latency_seconds', this.interTokenLatency],
      ['internvl:request_queue_time_seconds', this.queueTime],
      ['internvl:e2e_request_latency_seconds', this.e2eLatency],
      ['http_requests_total', this.httpRequests],
    ];
  }

  render(): string {
    const lines: string[] = [];
    for (const [name, family] of this.families) {
      lines.push(`# HELP ${name} ${family.help}`, `# TYPE ${name} ${family.type}`, ...family.render(name));
    }
    return `${lines.join('\n')}\n`;
  }
}
