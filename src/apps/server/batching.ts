/** The scheduler of a chat model's decoder. */
import type { Decoder } from '../../tasks/generation.js';
import { SerialScheduler, type Scheduler } from './scheduler.js';

export function createScheduler(lm: Decoder, limits: { maxBatch: number; maxQueue: number }): Scheduler {
  return new SerialScheduler(lm, { maxQueue: limits.maxQueue });
}
