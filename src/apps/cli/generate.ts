/** `internvl generate --model <dir> --input-ids 1,2,3`: raw ids in, ids out, for checking a decoder. */
import { parseCommandArgs } from './args.js';
import { GENERATION_OPTIONS, GENERATION_USAGE, generationArgs } from './generation_args.js';
import { MODEL_OPTIONS, MODEL_USAGE, resolveModelArg, sessionArgs } from './model_arg.js';
import type { Command } from './registry.js';

const USAGE = `Usage: internvl generate --model <dir|id> --input-ids <id,id,...> [options]

Runs the language model of a checkpoint (a bare LLaMA/Qwen2/InternLM2/Phi-3 folder, or the LLM inside an
InternVL-Chat checkpoint) on token ids and prints the generated ids (prefill once, then one cached step per token).

Options:
${MODEL_USAGE}
  --input-ids <ids>    prompt token ids, comma-separated                               (required)
${GENERATION_USAGE}
  --stop-ids <ids>     stop after any of these ids (default: the config's eos_token_id)
  --json               {"ids": [...], "prompt_tokens": N, "finish_reason": "..."} on stdout
  -h, --help           show this help
`;

function parseIds(text: string, flag: string, fail: (m: string) => never): number[] {
  const parts = text
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean);
  if (parts.length === 0 || !parts.every((p) => /^\d+$/.test(p)))
    fail(`--${flag} must be comma-separated non-negative integers, got '${text}'`);
  return parts.map(Number);
}

export const generateCommand: Command = {
  name: 'generate',
  summary: "generate token ids from token ids with a checkpoint's language model",
  async run(args) {
    const parsed = parseCommandArgs(
      {
        command: 'generate',
        usage: USAGE,
        options: {
          ...MODEL_OPTIONS,
          ...GENERATION_OPTIONS,
          'input-ids': { type: 'string' },
          'stop-ids': { type: 'string' },
          json: { type: 'boolean' },
        },
      },
      args,
    );
    if (!parsed) return 0;
    const fail = (m: string): never => parsed.fail(m);
    const inputIds = parseIds(parsed.required('input-ids'), 'input-ids', fail);
    const stopText = parsed.string('stop-ids');
    const options = generationArgs(parsed);
    const [{ loadLanguageModel }, { generate }] = await Promise.all([
      import('../../tasks/language_model.js'),
      import('../../tasks/generation.js'),
    ]);
    const lm = await loadLanguageModel(await resolveModelArg(parsed), { session: sessionArgs(parsed) });
    try {
      const vocab = lm.config.vocabSize;
      const bad = inputIds.find((id) => id >= vocab);
      if (bad !== undefined) parsed.fail(`--input-ids: id ${bad} is outside the vocabulary (${vocab} tokens)`);
      const eos = lm.config.eosTokenId;
      const stopTokenIds =
        stopText !== undefined
          ? parseIds(stopText, 'stop-ids', fail)
          : eos === null
            ? []
            : ([] as number[]).concat(eos);
      const result = await generate(lm, { ids: inputIds }, { ...options, stopTokenIds });
      if (parsed.flag('json')) {
        process.stdout.write(
          `${JSON.stringify({ ids: result.ids, prompt_tokens: result.promptTokens, finish_reason: result.finishReason })}\n`,
        );
      } else {
        process.stdout.write(`${result.ids.join(',')}\n`);
      }
      return 0;
    } finally {
      await lm.release();
    }
  },
};
