/** Loads whatever tokenizer a checkpoint folder holds: SentencePiece (`tokenizer.model`) or byte-level BPE. */
import { files } from '../../core/io.js';
import { TokenizerError } from '../../core/errors.js';
import { loadBpeTokenizer } from './bpe_loaders.js';
import { loadSentencePieceTokenizer } from './sentencepiece_hf.js';
import type { Tokenizer } from './tokenizer.js';

export type { Tokenizer } from './tokenizer.js';

/** The file that says which tokenizer a folder holds (checked in this order), or null when it holds none. */
export async function tokenizerFile(dir: string): Promise<'tokenizer.model' | 'tokenizer.json' | 'vocab.json' | null> {
  const fs = await files.get();
  for (const name of ['tokenizer.model', 'tokenizer.json', 'vocab.json'] as const)
    if (await fs.isFile(fs.join(dir, name))) return name;
  return null;
}

/**
 * LLaMA-family tokenizers (LLaMA-2, InternLM2, Phi-3, the InternVL-C vocabulary) ship a `tokenizer.model`, which the
 * official code loads with the slow SentencePiece tokenizer; Qwen2 ships `tokenizer.json` or vocab.json + merges.txt.
 */
export async function loadTokenizer(dir: string): Promise<Tokenizer> {
  const file = await tokenizerFile(dir);
  if (file === 'tokenizer.model') return loadSentencePieceTokenizer(dir);
  if (file !== null) return loadBpeTokenizer(dir);
  throw new TokenizerError(
    `${dir}: no tokenizer found (expected tokenizer.model, tokenizer.json, or vocab.json + merges.txt)`,
  );
}
