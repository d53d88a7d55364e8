/** The scheduler of a chat model's decoder. */
import type { DecoderSource } from '../../tasks/generation.js';
import { SerialScheduler, type Scheduler } from './scheduler.js';

export function createScheduler(lm: DecoderSource, limits: { maxBatch: number; maxQueue: number }): Scheduler {
  return new SerialScheduler(lm, { maxQueue: limits.maxQueue });
}
