/**
 * The platform seam. The library's layers are platform-neutral; what differs between Node and a browser sits
 * behind a few services, each a {@link Seam}: the onnxruntime backend (`core/session.ts`), file reading
 * (`core/io.ts`), image and video decoding (`processing/decoders.ts`). A browser entry plugs its implementations
 * in with `seam.set(...)` before it loads a model. In Node nothing needs to be done: on first use a seam imports
 * its Node implementation (`core/node/*`, `processing/node/*`), through a specifier that bundlers do not follow,
 * so a browser bundle never contains Node code.
 */
import { RuntimeError } from './errors.js';

export const isNode = typeof process !== 'undefined' && typeof process.versions?.node === 'string';

/**
 * Resolves after the event loop has had a turn (timers, I/O, other requests). Long CPU work in JavaScript (weight
 * conversion, quantization) awaits it between slices so that a process serving requests keeps answering.
 */
export function nextTurn(): Promise<void> {
  return new Promise((resolve) =>
    typeof setImmediate === 'function' ? setImmediate(resolve) : setTimeout(resolve, 0),
  );
}

export class Seam<T> {
  private implementation: T | undefined;
  private loading: Promise<T> | undefined;

  /**
   * @param what the service, for the error when nothing is plugged in
   * @param nodeModule the Node implementation module: `[import.meta.url, './node/x.js']` (resolved at run time)
   * @param exportName the export of that module that implements the service
   */
  constructor(
    private readonly what: string,
    private readonly nodeModule: readonly [base: string, relative: string],
    private readonly exportName: string,
  ) {}

  /** Plugs an implementation in (replacing the Node default). */
  set(implementation: T): void {
    this.implementation = implementation;
    this.loading = undefined;
  }

  /** The implementation in use, if one is loaded or set. */
  get current(): T | undefined {
    return this.implementation;
  }

  async get(): Promise<T> {
    if (this.implementation) return this.implementation;
    if (!isNode) throw new RuntimeError(`no ${this.what}: plug one in first (see core/platform.ts)`);
    this.loading ??= import(new URL(this.nodeModule[1], this.nodeModule[0]).href).then((module) => {
      this.implementation ??= module[this.exportName] as T;
      return this.implementation;
    });
    return this.loading;
  }
}
