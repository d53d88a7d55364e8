/** File names read from files (shard names, dataset entries, Hub names), checked and quoted the same way everywhere. */

/** A relative, `/`-separated name that cannot leave its folder by its spelling alone. */
export function isSafeRelativeName(name: string): boolean {
  if (name === '' || name.includes('\\') || name.includes('\0') || name.startsWith('/')) return false;
  return name.split('/').every((seg) => seg !== '' && seg !== '.' && seg !== '..');
}

/** A name for an error message: quoted, control characters escaped, long names cut. */
export function quoteName(name: string, max = 80): string {
  const q = JSON.stringify(name);
  return q.length <= max ? q : `${q.slice(0, max - 2)}…"`;
}
