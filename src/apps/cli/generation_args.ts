/** Sampling flags shared by `generate` and `chat`. */
import type { Options, ParsedArgs } from './args.js';
import { DEFAULT_MAX_NEW_TOKENS, type GenerationOptions } from '../../tasks/generation.js';

export const GENERATION_OPTIONS = {
  'max-new-tokens': {
    type: 'string',
    value: 'n',
    help: `tokens to generate at most (default ${DEFAULT_MAX_NEW_TOKENS}, or up to the end of the model's context)`,
  },
  greedy: { type: 'boolean', help: 'argmax decoding (the default unless --temperature/--top-k/--top-p is given)' },
  temperature: { type: 'string', value: 't', help: 'sample with this temperature' },
  'top-k': { type: 'string', value: 'k', help: 'sample among the k most likely tokens' },
  'top-p': { type: 'string', value: 'p', help: 'sample from the smallest set with probability mass p' },
  'repetition-penalty': { type: 'string', value: 'r', help: 'discourage tokens already generated (> 1)' },
  seed: { type: 'string', value: 'n', help: 'seed of the sampler', default: 0 },
} as const satisfies Options;

export function generationArgs(parsed: ParsedArgs<typeof GENERATION_OPTIONS>): GenerationOptions {
  const temperature = parsed.number('temperature');
  const topK = parsed.integer('top-k', { min: 1 });
  const topP = parsed.number('top-p');
  const sampling = temperature !== undefined || topK !== undefined || topP !== undefined;
  if (sampling && parsed.flag('greedy'))
    parsed.fail('--greedy cannot be combined with --temperature, --top-k or --top-p');
  if (temperature !== undefined && temperature <= 0) parsed.fail('--temperature must be > 0');
  if (topP !== undefined && !(topP > 0 && topP <= 1)) parsed.fail('--top-p must be in (0, 1]');
  const repetitionPenalty = parsed.number('repetition-penalty');
  // The penalty divides positive logits and multiplies negative ones: 0 or less would invert or zero them.
  if (repetitionPenalty !== undefined && !(repetitionPenalty > 0))
    parsed.fail(`--repetition-penalty must be > 0 (1 = off), got ${repetitionPenalty}`);
  return {
    // Unset: the library's default, which also stops at the end of the context instead of refusing the prompt.
    maxNewTokens: parsed.integer('max-new-tokens', { min: 0 }),
    doSample: sampling,
    temperature,
    topK,
    topP,
    repetitionPenalty,
    seed: parsed.integer('seed'),
  };
}
