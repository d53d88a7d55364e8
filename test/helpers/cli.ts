/**
 * Runs the CLI from source in a child process (`node --import tsx bin/internvl-dev.ts …`), so that tests see
 * exactly what a user sees: stdout, stderr and the exit code.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const DATA = path.join(REPO, 'test', 'data');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A temp folder removed at process exit; also the weight cache of the spawned CLI (INTERNVL_CACHE). */
export function tempDir(prefix = 'internvl-test-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const cacheDir = tempDir('internvl-cache-');
process.env.INTERNVL_CACHE = cacheDir;

export function runCli(
  args: string[],
  options: { env?: Record<string, string>; cwd?: string; input?: string } = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO, 'bin', 'internvl-dev.ts'), ...args], {
      cwd: options.cwd ?? REPO,
      env: { ...process.env, INTERNVL_CACHE: cacheDir, HF_HUB_OFFLINE: '1', ...options.env },
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    if (options.input !== undefined) child.stdin!.end(options.input);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Copies a fixture or model folder (files only, one level deep plus subfolders) to a fresh writable temp folder. */
export function copyFolder(src: string, dest = tempDir()): string {
  fs.cpSync(src, dest, { recursive: true });
  for (const file of walk(dest)) fs.chmodSync(file, 0o644);
  return dest;
}

function walk(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? walk(p) : [p];
  });
}

/** The stderr lines that are not progress output. */
export function errorLines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => l.trim() !== '');
}

/**
 * The CLI's `main` in this process with stderr captured: argument errors need no child process each. (stdout stays
 * the test runner's: its report goes there.)
 */
export async function inProcess(args: string[]): Promise<{ code: number; stderr: string }> {
  const { main } = await import('../../src/apps/cli/main.js');
  const captured: string[] = [];
  const write = process.stderr.write;
  process.stderr.write = ((chunk: string) => {
    captured.push(String(chunk));
    return true;
  }) as typeof process.stderr.write;
  try {
    const code = await main(args);
    return { code, stderr: captured.join('') };
  } finally {
    process.stderr.write = write;
  }
}
