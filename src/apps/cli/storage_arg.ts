/** `--storage-option key=value` (repeatable): LanceDB's storage options, for a database on object storage. */
import type { Options, ParsedArgs } from './args.js';

export const STORAGE_OPTIONS = {
  'storage-option': {
    type: 'string',
    multiple: true,
    value: 'key=value',
    help: 'a LanceDB storage option of an s3:// (gs://, az://) database, repeatable: region=…, endpoint=http://host:9000, allow_http=true, aws_access_key_id=…; AWS_* environment variables are read too',
  },
} as const satisfies Options;

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
