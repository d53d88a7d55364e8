/** What every benchmark reports alike: order statistics of its timings and the machine it ran on. */
import os from 'node:os';

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** The q-quantile (nearest rank), e.g. 0.95 for p95. */
export function quantile(values: readonly number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

export function cpuModel(): string {
  const cpus = os.cpus();
  return `${cpus[0]?.model?.trim() ?? 'unknown'} × ${cpus.length}`;
}

/** The machine and software a report was measured on. */
export async function machineInfo(): Promise<Record<string, unknown>> {
  const { ort } = await import('../../core/node/runtime.js');
  return {
    cpu: cpuModel(),
    cores: os.availableParallelism(),
    memoryGB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    onnxruntime: ort.env.versions.node ?? ort.env.versions.common,
    date: new Date().toISOString(),
  };
}
