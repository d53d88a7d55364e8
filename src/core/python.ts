/** Python built-in semantics that the ports reproduce exactly (the official numbers depend on them). */

/** Python 3 `round(x)` / `np.round(x)` for finite doubles: nearest integer, halves to the even neighbour. */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  // x - floor(x) is exact for doubles, so the 0.5 comparison is exact too.
  const diff = x - f;
  if (diff < 0.5) return f;
  if (diff > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

/** The characters of Python's `str.isspace()` / `str.split()`, as a RegExp character-class body. */
export const PY_WHITESPACE =
  '\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
