/**
 * Typed errors. Every error a user can cause (bad file, bad config, bad input) is an InternVLError subclass
 * whose message names the file, tensor or field at fault; the CLI prints `message` alone for these, and a
 * stack trace only for anything else (a bug).
 */
export class InternVLError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A safetensors file that is truncated, malformed or lies about its contents. */
export class SafetensorsError extends InternVLError {}
/** A checkpoint folder that cannot be loaded: missing files, unknown architecture, missing weights. */
export class ModelLoadError extends InternVLError {}
/** A config.json with a missing or invalid field. */
export class ConfigError extends InternVLError {}
/** An image or video that cannot be decoded or is unreasonably large. */
export class ImageError extends InternVLError {}
/** A tokenizer file that cannot be parsed, or text that cannot be encoded. */
export class TokenizerError extends InternVLError {}
/** A dataset file or folder (evaluation data, class names, templates) that is missing or malformed. */
export class DatasetError extends InternVLError {}
/** Downloads from the Hugging Face Hub. */
export class HubError extends InternVLError {}
/**
 * A file or folder that cannot be read or written: a full disk or file-size limit, permissions, a missing folder,
 * a folder where a file belongs.
 */
export class StorageError extends InternVLError {}
/** Invalid arguments to the library API or the CLI. */
export class UsageError extends InternVLError {}
/** onnxruntime failed to build or run a graph. */
export class RuntimeError extends InternVLError {}
/** A search index that cannot be opened, or a table that holds another model's or mode's embeddings. */
export class IndexError extends InternVLError {}
/**
 * A broken internal invariant (an encoder returning the wrong shape, a cache of the wrong width): a bug, not
 * something the user typed. Deliberately not an InternVLError, so the CLI reports it as a bug (exit 70, stack).
 */
export class InternalError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'InternalError';
  }
}
