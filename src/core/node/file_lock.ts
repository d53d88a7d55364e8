/**
 * Cross-process locks for downloads and weight conversions. The lock file records its owner (pid, host, start
 * time) and the owner refreshes its mtime as a heartbeat, so a waiter knows at once when the owner died on this host
 * (its pid is gone: SIGKILL, a crash) and within `staleMs` on another host (no heartbeat). While the owner is alive the
 * waiter says on stderr (or `onWait`) whom it waits for.
 *
 * The file is created with its content in one step (written aside, then hard-linked to the lock name, which fails if
 * the name exists), so no waiter ever reads a half-written owner.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { processAlive, storageError } from './atomic_write.js';

export interface LockOptions {
  /** What the lock guards, for the waiting message ("the download of org/name model.safetensors"). */
  what: string;
  /** Where waiting is reported; default one line on stderr. */
  onWait?: (message: string) => void;
  /**
   * For a lock file without an owner record (left by another tool, e.g. huggingface_hub's filelock, which keeps
   * its lock files): whether that tool is still at work. Default: no, the file is taken.
   */
  foreignAlive?: () => Promise<boolean>;
  heartbeatMs?: number;
  staleMs?: number;
  pollMs?: number;
}

interface Owner {
  tool: 'internvl-ts';
  pid: number;
  host: string;
  since: string;
}

const HEARTBEAT_MS = 5_000;
const STALE_MS = 60_000;
const POLL_MS = 200;
/** A waiter repeats its message this often, so a long wait never looks like a hang. */
const REMIND_MS = 15_000;

function parseOwner(text: string): Owner | undefined {
  try {
    const o = JSON.parse(text) as Partial<Owner>;
    if (o.tool === 'internvl-ts' && Number.isInteger(o.pid) && typeof o.host === 'string') return o as Owner;
  } catch {}
  return undefined;
}

/** Whether the owner recorded in a lock is alive: exact for this host, by heartbeat for another. */
async function ownerAlive(owner: Owner | undefined, mtimeMs: number, options: LockOptions): Promise<boolean> {
  if (!owner) return (await options.foreignAlive?.()) ?? false;
  if (owner.host === os.hostname()) return processAlive(owner.pid);
  return Date.now() - mtimeMs < (options.staleMs ?? STALE_MS);
}

/** Removes a dead owner's lock, unless another waiter replaced it meanwhile (then it is put back). */
async function breakLock(lockPath: string, seen: string): Promise<void> {
  const aside = `${lockPath}.${process.pid}.${randomBytes(4).toString('hex')}.broken`;
  try {
    await fs.rename(lockPath, aside);
  } catch {
    return; // someone else broke it first
  }
  const text = await fs.readFile(aside, 'utf8').catch(() => '');
  if (text !== seen) await fs.link(aside, lockPath).catch(() => {});
  await fs.rm(aside, { force: true });
}

/** Takes the lock at `lockPath` (creating its folder), waiting for a live owner; returns the release function. */
export async function acquireLock(lockPath: string, options: LockOptions): Promise<() => Promise<void>> {
  const owner: Owner = { tool: 'internvl-ts', pid: process.pid, host: os.hostname(), since: new Date().toISOString() };
  const mine = `${JSON.stringify(owner)}\n`;
  const onWait = options.onWait ?? ((m: string) => process.stderr.write(`${m}\n`));
  try {
    await fs.mkdir(path.dirname(lockPath), { recursive: true });
  } catch (error) {
    throw storageError(error, lockPath);
  }
  const draft = `${lockPath}.${process.pid}.${randomBytes(4).toString('hex')}.new`;
  let waitingSince: number | undefined;
  let lastNotice = 0;
  try {
    await fs.writeFile(draft, mine);
    for (;;) {
      try {
        await fs.link(draft, lockPath);
        break;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw storageError(error, lockPath);
      }
      let text: string;
      let mtimeMs: number;
      try {
        [text, mtimeMs] = await Promise.all([fs.readFile(lockPath, 'utf8'), fs.stat(lockPath).then((s) => s.mtimeMs)]);
      } catch {
        continue; // released between our attempts
      }
      const holder = parseOwner(text);
      if (!(await ownerAlive(holder, mtimeMs, options))) {
        await breakLock(lockPath, text);
        continue;
      }
      const now = Date.now();
      waitingSince ??= now;
      if (now - lastNotice >= REMIND_MS) {
        const who = holder ? `process ${holder.pid} on ${holder.host} (since ${holder.since})` : 'another program';
        const waited = Math.round((now - waitingSince) / 1000);
        onWait(`waiting for ${options.what}: ${lockPath} is held by ${who}${waited > 0 ? `, ${waited} s so far` : ''}`);
        lastNotice = now;
      }
      await sleep(options.pollMs ?? POLL_MS);
    }
  } finally {
    await fs.rm(draft, { force: true });
  }
  const beat = setInterval(() => {
    const t = new Date();
    fs.utimes(lockPath, t, t).catch(() => {});
  }, options.heartbeatMs ?? HEARTBEAT_MS);
  beat.unref();
  return async () => {
    clearInterval(beat);
    const text = await fs.readFile(lockPath, 'utf8').catch(() => '');
    if (text === mine) await fs.rm(lockPath, { force: true });
  };
}
