/**
 * `internvl`: subcommand dispatch, help, version and the error policy of the whole CLI.
 *
 * Error policy: an InternVLError is something the user can fix (a bad file, a bad flag), so it is printed as ONE
 * line `error: <message>` and the exit code is 2. Anything else is a bug in this program: the stack is printed and
 * the exit code is 70 (EX_SOFTWARE), so that it is reported instead of being mistaken for bad input.
 */
import fs from 'node:fs';
import { InternVLError, UsageError } from '../../core/errors.js';
import { getCommand, listCommands, registerCommand, type Command } from './registry.js';
import { verifyCommand } from './verify.js';
import { embedImageCommand } from './embed_image.js';
import { benchCommand } from './bench.js';
import { captionCommand } from './caption.js';
import { chatCommand } from './chat.js';
import { classifyCommand } from './classify.js';
import { embedTextCommand } from './embed_text.js';
import { generateCommand } from './generate.js';
import { tokenizeCommand } from './tokenize.js';
import { evalCommand } from './eval.js';
import { indexCommand } from './index_cmd.js';
import { searchCommand } from './search.js';
import { workerCommand } from './worker.js';
import { serveCommand } from './serve.js';
import { webCommand } from './web.js';

export { registerCommand, type Command };

/** Exit codes shared by every command. */
export const EXIT = { ok: 0, mismatch: 1, usage: 2, bug: 70 } as const;

// New commands: one file in src/apps/cli/ exporting a Command, and one entry here.
const BUILTIN_COMMANDS: Command[] = [
  verifyCommand,
  embedImageCommand,
  benchCommand,
  classifyCommand,
  embedTextCommand,
  captionCommand,
  tokenizeCommand,
  generateCommand,
  chatCommand,
  evalCommand,
  indexCommand,
  searchCommand,
  workerCommand,
  serveCommand,
  webCommand,
];
for (const command of BUILTIN_COMMANDS) if (!getCommand(command.name)) registerCommand(command);

export function version(): string {
  // The same relative path works from src/apps/cli (tsx) and dist/apps/cli (built).
  const pkg = JSON.parse(fs.readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
    version?: string;
  };
  return pkg.version ?? 'unknown';
}

export function mainHelp(): string {
  const commands = listCommands();
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    `internvl ${version()}: InternVL models (InternViT, InternVL-C/G, InternVL-Chat) on onnxruntime`,
    '',
    'Usage: internvl <command> [options]',
    '',
    'Commands:',
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Options:',
    "  -h, --help     show this help; `internvl <command> --help` shows a command's options",
    '  -V, --version  print the version',
    '',
    'Exit codes: 0 success, 1 verification mismatch, 2 bad input or usage, 70 internal error (a bug: please report it).',
    '',
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  try {
    const [first, ...rest] = argv;
    if (first === undefined) {
      process.stderr.write(mainHelp());
      return EXIT.usage;
    }
    if (first === '--help' || first === '-h' || first === 'help') {
      if (first === 'help' && rest[0] !== undefined) return await dispatch(rest[0], ['--help']);
      process.stdout.write(mainHelp());
      return EXIT.ok;
    }
    if (first === '--version' || first === '-V') {
      process.stdout.write(`${version()}\n`);
      return EXIT.ok;
    }
    if (first.startsWith('-')) {
      throw new UsageError(`unknown option '${first}' (options go after the command; see 'internvl --help')`);
    }
    return await dispatch(first, rest);
  } catch (error) {
    return reportError(error);
  }
}

async function dispatch(name: string, args: string[]): Promise<number> {
  const command = getCommand(name);
  if (!command) {
    const names = listCommands().map((c) => c.name);
    const close = names.find((n) => editDistance(n, name) <= 2);
    throw new UsageError(
      `unknown command '${name}'${close ? ` (did you mean '${close}'?)` : ''}; commands: ${names.join(', ')}`,
    );
  }
  return command.run(args);
}

/** Prints an error by the CLI's policy and returns the exit code. */
export function reportError(error: unknown): number {
  if (error instanceof InternVLError) {
    // One line, whatever the message holds: scripts grep stderr, and a wrapped path is unreadable.
    process.stderr.write(`error: ${error.message.replace(/\s*\n\s*/g, ' ')}\n`);
    return EXIT.usage;
  }
  process.stderr.write('internvl: internal error (this is a bug; please report it with the trace below)\n');
  process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  return EXIT.bug;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length];
}
