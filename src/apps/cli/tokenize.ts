/** `internvl tokenize <tokenizer> (--text T | --file F) [--decode]`: token ids of text, or text of token ids. */
import fs from 'node:fs';
import path from 'node:path';
import { parseCommandArgs } from './args.js';
import type { Command } from './registry.js';

export const tokenizeCommand: Command = {
  name: 'tokenize',
  summary: 'token ids of text with any supported tokenizer (SentencePiece, byte-level BPE)',
  async run(args) {
    const parsed = parseCommandArgs(
      {
        command: 'tokenize',
        synopsis: 'tokenize <tokenizer> (--text <text> | --file <file>) [--add-special] [--decode] [--json]',
        description: `Prints the token ids of each input line, comma-separated, one line per input; with --decode, the text
of each input line of token ids. <tokenizer> is a model or tokenizer folder (tokenizer.model, tokenizer.json, or
vocab.json + merges.txt with their configs) or one of those files.`,
        options: {
          text: { type: 'string', value: 'text', help: 'the text (its lines are encoded separately)' },
          file: { type: 'string', value: 'file', help: 'a UTF-8 file, one text per line' },
          separator: {
            type: 'string',
            value: 's',
            help: "split the input at this string instead of at newlines (\\n and \\t are understood), e.g. '\\n__ggml_vocab_test__\\n' for llama.cpp's test vectors",
          },
          'add-special': {
            type: 'boolean',
            help: 'add BOS/EOS as the tokenizer config says (default: no special tokens)',
          },
          decode: {
            type: 'boolean',
            help: 'the input lines are token ids (comma- or space-separated): print their text',
          },
          'skip-special': {
            type: 'boolean',
            help: 'with --decode: leave special tokens (BOS, EOS, pad, added special tokens) out of the text',
          },
          json: { type: 'boolean', help: '{"ids": [[...], ...]} on stdout; with --decode {"texts": ["...", ...]}' },
        },
        positionals: { min: 1, max: 1 },
      },
      args,
    );
    if (!parsed) return 0;
    const text = parsed.string('text');
    const file = parsed.string('file');
    if ((text === undefined) === (file === undefined)) parsed.fail('give exactly one of --text or --file');
    let input = text ?? '';
    if (file !== undefined) {
      try {
        input = fs.readFileSync(file, 'utf8');
      } catch (error) {
        parsed.fail(`cannot read --file '${file}' (${(error as NodeJS.ErrnoException).code ?? error})`);
      }
    }
    const separator = (parsed.string('separator') ?? '\n').replaceAll('\\n', '\n').replaceAll('\\t', '\t');
    const lines = input.split(separator);
    // A file's final newline ends its last line rather than starting an empty one.
    if (file !== undefined && lines.length > 1 && lines[lines.length - 1].replace(/\n$/, '') === '') lines.pop();
    else if (file !== undefined && separator !== '\n')
      lines[lines.length - 1] = lines[lines.length - 1].replace(/\n$/, '');
    const target = parsed.positionals[0];
    if (!fs.existsSync(target)) parsed.fail(`no such tokenizer folder or file '${target}'`);
    const dir = fs.statSync(target).isDirectory() ? target : path.dirname(target);
    const { loadTokenizer } = await import('../../processing/tokenizers/index.js');
    const tokenizer = await loadTokenizer(dir);
    if (parsed.flag('decode')) {
      if (parsed.flag('add-special')) parsed.fail('--add-special is for encoding; with --decode see --skip-special');
      const texts = lines.map((line, i) => {
        const ids = line.split(/[\s,]+/).filter(Boolean);
        const bad = ids.find((id) => !/^\d+$/.test(id) || Number(id) >= tokenizer.vocabSize);
        if (bad !== undefined)
          parsed.fail(
            `--decode: input line ${i + 1}: '${bad}' is not a token id of this tokenizer (0 to ${tokenizer.vocabSize - 1})`,
          );
        return tokenizer.decode(ids.map(Number), { skipSpecialTokens: parsed.flag('skip-special') });
      });
      if (parsed.flag('json')) process.stdout.write(`${JSON.stringify({ texts })}\n`);
      else process.stdout.write(`${texts.join('\n')}\n`);
      return 0;
    }
    if (parsed.flag('skip-special')) parsed.fail('--skip-special is for --decode');
    const addSpecialTokens = parsed.flag('add-special');
    const ids = lines.map((line) => tokenizer.encode(line, { addSpecialTokens }));
    if (parsed.flag('json')) process.stdout.write(`${JSON.stringify({ ids })}\n`);
    else process.stdout.write(`${ids.map((row) => row.join(',')).join('\n')}\n`);
    return 0;
  },
};
