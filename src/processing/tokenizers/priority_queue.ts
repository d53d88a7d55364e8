/** A binary heap: `pop` returns the element that comes `before` all others. Both BPE variants keep their merge agenda in one. */
export class PriorityQueue<T> {
  private readonly heap: T[] = [];

  constructor(private readonly before: (a: T, b: T) => boolean) {}

  get size(): number {
    return this.heap.length;
  }

  push(value: T): void {
    const h = this.heap;
    let i = h.length;
    h.push(value);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(value, h[parent])) break;
      h[i] = h[parent];
      i = parent;
    }
    h[i] = value;
  }

  pop(): T {
    const h = this.heap;
    const top = h[0];
    const last = h.pop()!;
    const n = h.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        if (left >= n) break;
        const right = left + 1;
        const child = right < n && this.before(h[right], h[left]) ? right : left;
        if (!this.before(h[child], last)) break;
        h[i] = h[child];
        i = child;
      }
      h[i] = last;
    }
    return top;
  }
}
