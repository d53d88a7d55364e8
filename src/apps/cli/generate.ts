/** `internvl generate --model <dir> (--prompt T | --input-ids 1,2,3)`: a bare continuation, for checking a decoder. */
import { parseCommandArgs } from './args.js';
import { GENERATION_OPTIONS, generationArgs } from './generation_args.js';
import { MODEL_OPTIONS, resolveModelArg, sessionArgs } from './model_arg.js';
import type { Command } from './registry.js';

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
  summary: "continue a prompt (text or token ids) with a checkpoint's language model, no chat template",
  async run(args) {
    const parsed = parseCommandArgs(
      {
        command: 'generate',
        synopsis: 'generate --model <dir|id> (--prompt <text> | --input-ids <id,id,...>) [options]',
        description: `Runs the language model of a checkpoint (a bare LLaMA/Qwen2/InternLM2/Phi-3 folder, or the LLM inside an
InternVL-Chat checkpoint) on a prompt, with no chat template, and prints the generated text (prefill once, then one
cached step per token). A folder without a tokenizer prints the generated token ids instead.`,
        options: {
          ...MODEL_OPTIONS,
          prompt: {
            type: 'string',
            value: 'text',
            help: "the prompt text, encoded with the folder's tokenizer (BOS as its config says)",
          },
          'input-ids': { type: 'string', value: 'ids', help: 'the prompt as token ids, comma-separated' },
          ...GENERATION_OPTIONS,
          'stop-ids': {
            type: 'string',
            value: 'ids',
            help: "stop after any of these ids (default: the config's eos_token_id)",
          },
          json: {
            type: 'boolean',
            help: '{"ids": [...], "text": "...", "prompt_tokens": N, "finish_reason": "..."} on stdout ("text" only when the folder has a tokenizer)',
          },
        },
      },
      args,
    );
    if (!parsed) return 0;
    const fail = (m: string): never => parsed.fail(m);
    const promptText = parsed.string('prompt');
    if ((promptText === undefined) === (parsed.string('input-ids') === undefined))
      parsed.fail('give exactly one of --prompt or --input-ids');
    const stopText = parsed.string('stop-ids');
    const options = generationArgs(parsed);
    const [{ loadLanguageModel }, { generate }, { loadTokenizer, tokenizerFile }] = await Promise.all([
      import('../../tasks/language_model.js'),
      import('../../tasks/generation.js'),
      import('../../processing/tokenizers/index.js'),
    ]);
    const dir = await resolveModelArg(parsed);
    const tokenizer = (await tokenizerFile(dir)) === null ? null : await loadTokenizer(dir);
    const inputIds =
      promptText === undefined
        ? parseIds(parsed.required('input-ids'), 'input-ids', fail)
        : tokenizer === null
          ? fail(`--prompt needs a tokenizer, and ${dir} has none (give --input-ids)`)
          : tokenizer.encode(promptText);
    if (inputIds.length === 0) parsed.fail('--prompt encodes to no tokens');
    const lm = await loadLanguageModel(dir, { session: sessionArgs(parsed) });
    try {
      const vocab = lm.config.vocabSize;
      const bad = inputIds.find((id) => id >= vocab);
      if (bad !== undefined) parsed.fail(`prompt id ${bad} is outside the model's vocabulary (${vocab} tokens)`);
      const eos = lm.config.eosTokenId;
      const stopTokenIds =
        stopText !== undefined
          ? parseIds(stopText, 'stop-ids', fail)
          : eos === null
            ? []
            : ([] as number[]).concat(eos);
      const result = await generate(lm, { ids: inputIds }, { ...options, stopTokenIds });
      const text = tokenizer?.decode(result.ids, { skipSpecialTokens: true });
      if (parsed.flag('json')) {
        const json = { ids: result.ids, text, prompt_tokens: result.promptTokens, finish_reason: result.finishReason };
        process.stdout.write(`${JSON.stringify(json)}\n`);
      } else if (text !== undefined) {
        process.stdout.write(`${text}\n`);
      } else {
        if (!parsed.flag('quiet')) process.stderr.write(`notice: ${dir} has no tokenizer; printing token ids\n`);
        process.stdout.write(`${result.ids.join(',')}\n`);
      }
      return 0;
    } finally {
      await lm.release();
    }
  },
};
