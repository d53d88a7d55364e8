/**
 * Progress printing for long work (downloads, conversions, benchmarks). Output goes to stderr so that stdout
 * stays clean for results that may be piped. On a terminal one line is redrawn in place; in logs and CI (no
 * TTY) a line is printed only now and then, because thousands of `\r` updates make a log unreadable.
 */

export interface ProgressStream {
  write(chunk: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface ProgressOptions {
  /** Print nothing at all. */
  quiet?: boolean;
  /** Where to print; default process.stderr. */
  stream?: ProgressStream;
  /** How to show amounts: bytes (KiB/MiB/GiB, with a rate) or plain counts. Default 'bytes'. */
  unit?: 'bytes' | 'items';
  /** What the items are, for the rate (`12 images/s`); default 'items'. */
  itemName?: string;
  /** Minimum time between redraws on a TTY; default 100 ms. */
  ttyIntervalMs?: number;
  /** Minimum time between lines without a TTY; default 10 s (a line is also printed at each 25% step). */
  lineIntervalMs?: number;
  /** Clock, for tests. */
  now?: () => number;
}

export interface ProgressReporter {
  /** Report the amount done so far (absolute, not an increment) and, when known, the total and a short note. */
  update(done: number, total?: number, note?: string): void;
  /** Print a message on its own line without garbling the progress line. */
  log(message: string): void;
  /** Finish: print a final line (the last state, or `message`) and stop. Later calls do nothing. */
  finish(message?: string): void;
}

/** A reporter that prints nothing. */
export const SILENT_PROGRESS: ProgressReporter = { update() {}, log() {}, finish() {} };

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`;
}

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export function createProgressReporter(label: string, options: ProgressOptions = {}): ProgressReporter {
  if (options.quiet) return SILENT_PROGRESS;
  const stream: ProgressStream = options.stream ?? process.stderr;
  const tty = stream.isTTY === true;
  const unit = options.unit ?? 'bytes';
  const itemName = options.itemName ?? 'items';
  const now = options.now ?? (() => Date.now());
  const ttyInterval = options.ttyIntervalMs ?? 100;
  const lineInterval = options.lineIntervalMs ?? 10_000;
  const start = now();

  let done = 0;
  let total: number | undefined;
  let note: string | undefined;
  let lastDraw = -Infinity;
  let lastQuarter = -1;
  let lineShown = false;
  let finished = false;

  const amount = (n: number) => (unit === 'bytes' ? formatBytes(n) : String(n));

  function render(final: boolean): string {
    const parts = [label];
    if (total !== undefined && total > 0) {
      const pct = Math.min(100, (100 * done) / total);
      parts.push(`${pct.toFixed(pct < 10 ? 1 : 0)}%`, `${amount(done)}/${amount(total)}`);
    } else {
      parts.push(amount(done));
    }
    const elapsed = (now() - start) / 1000;
    if (elapsed > 0.5 && done > 0) {
      const rate = done / elapsed;
      parts.push(unit === 'bytes' ? `${formatBytes(rate)}/s` : `${rate.toFixed(rate >= 10 ? 0 : 1)} ${itemName}/s`);
      if (!final && total !== undefined && total > done) parts.push(`ETA ${formatDuration((total - done) / rate)}`);
    }
    if (final) parts.push(`in ${formatDuration(elapsed)}`);
    if (note) parts.push(note);
    return parts.join('  ');
  }

  function fit(line: string): string {
    // A line wider than the terminal wraps, and `\r` then redraws only its last row, leaving garbage above.
    const cols = stream.columns ?? 80;
    return line.length < cols ? line : `${line.slice(0, Math.max(10, cols - 2))}…`;
  }

  function clearLine(): void {
    if (tty && lineShown) {
      stream.write('\r\x1b[2K');
      lineShown = false;
    }
  }

  return {
    update(d, t, n) {
      if (finished) return;
      done = d;
      if (t !== undefined) total = t;
      if (n !== undefined) note = n;
      const time = now();
      if (tty) {
        if (time - lastDraw < ttyInterval && !(total !== undefined && done >= total)) return;
        lastDraw = time;
        stream.write(`\r\x1b[2K${fit(render(false))}`);
        lineShown = true;
        return;
      }
      // The last amount is printed once, by finish(), with the total time.
      if (total !== undefined && done >= total) return;
      const quarter = total ? Math.floor((4 * done) / total) : -1;
      const newQuarter = quarter > lastQuarter && quarter < 4;
      if (!newQuarter && time - lastDraw < lineInterval) return;
      lastQuarter = Math.max(lastQuarter, quarter);
      lastDraw = time;
      stream.write(`${render(false)}\n`);
    },
    log(message) {
      if (finished) {
        stream.write(`${message}\n`);
        return;
      }
      clearLine();
      stream.write(`${message}\n`);
      // The message erased the bar; redraw it under the message at the next update.
      if (tty) lastDraw = -Infinity;
    },
    finish(message) {
      if (finished) return;
      finished = true;
      clearLine();
      stream.write(`${message ?? render(true)}\n`);
    },
  };
}
