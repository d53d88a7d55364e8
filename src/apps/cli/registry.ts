/**
 * The subcommands of `internvl`. Each lives in its own file under `src/apps/cli/` and is listed once in `main.ts`.
 * A command file should stay cheap to import (no onnxruntime, no sharp at module level): `internvl --help` imports
 * every command, so heavy modules belong in a dynamic `import()` inside `run`.
 */

export interface Command {
  /** What the user types after `internvl` (`embed-image`). */
  name: string;
  /** One line for `internvl --help`. */
  summary: string;
  /**
   * Runs the command with the arguments that follow its name and resolves to the exit code. Handles its own
   * `--help`. Throws an InternVLError for anything the user can fix (printed as one line, exit 2).
   */
  run(args: string[]): Promise<number>;
}

const commands = new Map<string, Command>();

export function registerCommand(command: Command): void {
  if (!/^[a-z][a-z0-9-]*$/.test(command.name)) throw new Error(`invalid command name '${command.name}'`);
  if (commands.has(command.name)) throw new Error(`command '${command.name}' is registered twice`);
  commands.set(command.name, command);
}

export function getCommand(name: string): Command | undefined {
  return commands.get(name);
}

export function listCommands(): Command[] {
  return [...commands.values()].sort((a, b) => a.name.localeCompare(b.name));
}
