/** Sampling flags shared by `generate` and `chat`. */
import type { ParsedArgs } from './args.js';
import type { GenerationOptions } from '../../tasks/generation.js';

export const GENERATION_OPTIONS = {
  'max-new-tokens': { type: 'string' },
  greedy: { type: 'boolean' },
  temperature: { type: 'string' },
  'top-k': { type: 'string' },
  'top-p': { type: 'string' },
  'repetition-penalty': { type: 'string' },
  seed: { type: 'string' },
} as const;

export const GENERATION_USAGE = `  --max-new-tokens <n> tokens to generate at most (default 1024, or up to the end of the model's context)
  --greedy             argmax decoding (the default unless --temperature/--top-k/--top-p is given)
  --temperature <t>    sample with this temperature
  --top-k <k>          sample among the k most likely tokens
  --top-p <p>          sample from the smallest set with probability mass p
  --repetition-penalty <r>  discourage tokens already generated (> 1)
  --seed <n>           seed of the sampler (default 0)`;

function number(parsed: ParsedArgs, name: string): number | undefined {
  const text = parsed.string(name);
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!Number.isFinite(value)) parsed.fail(`--${name} must be a number, got '${text}'`);
  return value;
}

export function generationArgs(parsed: ParsedArgs): GenerationOptions {
  const temperature = number(parsed, 'temperature');
  const topK = parsed.integer('top-k', undefined, { min: 1 });
  const topP = number(parsed, 'top-p');
  const sampling = temperature !== undefined || topK !== undefined || topP !== undefined;
  if (sampling && parsed.flag('greedy'))
    parsed.fail('--greedy cannot be combined with --temperature, --top-k or --top-p');
  if (temperature !== undefined && temperature <= 0) parsed.fail('--temperature must be > 0');
  if (topP !== undefined && !(topP > 0 && topP <= 1)) parsed.fail('--top-p must be in (0, 1]');
  const repetitionPenalty = number(parsed, 'repetition-penalty');
  // The penalty divides positive logits and multiplies negative ones: 0 or less would invert or zero them.
  if (repetitionPenalty !== undefined && !(repetitionPenalty > 0))
    parsed.fail(`--repetition-penalty must be > 0 (1 = off), got ${repetitionPenalty}`);
  return {
    // Unset: the library's default, which also stops at the end of the context instead of refusing the prompt.
    maxNewTokens: parsed.integer('max-new-tokens', undefined, { min: 0 }),
    doSample: sampling,
    temperature,
    topK,
    topP,
    repetitionPenalty,
    seed: parsed.integer('seed', 0),
  };
}
