/**
 * Evaluation results as JSON (one record per model × dataset, CLIP_benchmark-like) and as a Markdown table.
 */

export interface EvalResult {
  model: string;
  dataset: string;
  /** e.g. 'zeroshot_classification', 'zeroshot_retrieval'. */
  task?: string;
  language?: string;
  /** Metric name → value as a fraction (CLIP_benchmark convention); NaN or null = not defined. */
  metrics: Record<string, number | null>;
  /** Anything else worth keeping (sample counts, settings, timings). */
  extra?: Record<string, unknown>;
}

/** JSON text of the results. NaN and ±Infinity become null, which JSON can represent. */
export function resultsToJson(results: readonly EvalResult[], indent = 2): string {
  return JSON.stringify(results, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), indent);
}

export interface MarkdownOptions {
  /** Metric columns, in order; by default every metric seen, in first-seen order. */
  metrics?: readonly string[];
  /** Show values ×100 (as the InternVL tables do). Default true. */
  percent?: boolean;
  /** Decimals. Default 2. */
  digits?: number;
}

function cell(s: string): string {
  // A pipe would end the cell and a newline the row.
  return s.replace(/\|/g, '\\|').replace(/\r?\n/g, ' ');
}

/** A Markdown table: model | dataset | one column per metric; a metric a row lacks is left blank. */
export function resultsToMarkdown(results: readonly EvalResult[], opts: MarkdownOptions = {}): string {
  const percent = opts.percent ?? true;
  const digits = opts.digits ?? 2;
  let metrics = opts.metrics ? [...opts.metrics] : [];
  if (!opts.metrics) {
    const seen = new Set<string>();
    for (const r of results) {
      for (const k of Object.keys(r.metrics)) {
        if (seen.has(k)) continue;
        seen.add(k);
        metrics.push(k);
      }
    }
  }
  metrics = metrics.filter((m) => m.length > 0);
  const header = ['model', 'dataset', ...metrics];
  const lines = [
    `| ${header.map(cell).join(' | ')} |`,
    `| ${header.map((_, i) => (i < 2 ? '---' : '---:')).join(' | ')} |`,
  ];
  for (const r of results) {
    const vals = metrics.map((m) => {
      if (!(m in r.metrics)) return '';
      const v = r.metrics[m];
      if (v === null || !Number.isFinite(v)) return 'n/a';
      return (percent ? v * 100 : v).toFixed(digits);
    });
    lines.push(`| ${[cell(r.model), cell(r.dataset), ...vals].join(' | ')} |`);
  }
  return `${lines.join('\n')}\n`;
}
