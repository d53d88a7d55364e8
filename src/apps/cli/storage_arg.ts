/** `--storage-option key=value` (repeatable): LanceDB's storage options, for a database on object storage. */
import type { ParsedArgs } from './args.js';

export const STORAGE_OPTIONS = { 'storage-option': { type: 'string', multiple: true } } as const;

/** The help lines, the description starting at `column` as the command's other options do. */
export function storageUsage(column: number): string {
  const pad = ' '.repeat(column);
  return [
    '  --storage-option <key=value>',
    `${pad}a LanceDB storage option of an s3:// (gs://, az://) database, repeatable: region=…,`,
    `${pad}endpoint=http://host:9000, allow_http=true, aws_access_key_id=…; AWS_* environment variables`,
    `${pad}are read too`,
  ].join('\n');
}

export function storageOptionsArg(parsed: ParsedArgs): Record<string, string> | undefined {
  const values = (parsed.values['storage-option'] as string[] | undefined) ?? [];
  if (values.length === 0) return undefined;
  const options: Record<string, string> = {};
  for (const text of values) {
    const eq = text.indexOf('=');
    if (eq <= 0) parsed.fail(`--storage-option '${text}' is not key=value`);
    options[text.slice(0, eq).trim().toLowerCase()] = text.slice(eq + 1);
  }
  return options;
}
