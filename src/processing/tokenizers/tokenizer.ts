/** The interface every tokenizer of the project implements (SentencePiece, byte-level BPE). */
export interface EncodeOptions {
  /** Add the tokenizer's BOS/EOS as its config says (`add_bos_token`, `add_eos_token`). Default true. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Drop special / control tokens (BOS, EOS, pad, added special tokens) from the text. Default false. */
  skipSpecialTokens?: boolean;
}

export interface Tokenizer {
  readonly vocabSize: number;
  readonly bosTokenId: number | null;
  readonly eosTokenId: number | null;
  readonly padTokenId: number | null;
  readonly unkTokenId: number | null;
  encode(text: string, options?: EncodeOptions): number[];
  decode(ids: readonly number[], options?: DecodeOptions): string;
  /** Id of a piece or added token (`<|im_end|>`, `<IMG_CONTEXT>`); undefined when unknown. */
  tokenToId(token: string): number | undefined;
  idToToken(id: number): string | undefined;
}
