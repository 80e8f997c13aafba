// Owns the `dmio` program: commander parses the command line (with --help on every command),
// each command returns its exit status, and errors map to exit statuses here: a usage error,
// a commander parse error or a library argument error is 2 (nothing was written), anything
// unexpected is 1 with its message. The process exits with the status once output is flushed.
// Output failures are handled here for every command: stdout and stderr are watched from the
// start, a failed write of the output (a full disk, a closed or broken stdout) is exit status
// 1 with one line naming the output and the errno (EPIPE quietly), never a crash. What the
// program takes from the process (streams, signals, exit) comes in as `CliDeps` (context.ts), so
// tests run `main` in-process; `runCli` is the process entry the bin calls.

import { Command, CommanderError } from 'commander';
import { readFileSync } from 'node:fs';
import { keepClosedStdoutClosed } from './closed-stdout.js';
import { OutputError, outputFailureLine, STDOUT_NAME, watchStdio } from './stdout.js';
import { EXIT_IO_ERROR, EXIT_OK, EXIT_USAGE, UsageError } from './exit-status.js';
import { cliContext, tell, type CliContext, type CliDeps, type RunCommand } from './context.js';

export type { CliDeps } from './context.js';

/** Library errors that mean the arguments were wrong, not that I/O failed. */
const ARGUMENT_CODES = new Set(['DMIO_ERR_INVALID_ARG_TYPE', 'DMIO_ERR_OUT_OF_RANGE',
  'DMIO_ERR_INVALID_ARG_VALUE', 'DMIO_ERR_MISALIGNED', 'DMIO_ERR_TOO_MANY_REGIONS',
  'DMIO_ERR_INVALID_DEVICE_SPEC', 'DMIO_ERR_READ_ONLY', 'DMIO_ERR_OPEN_FAILED']);

/**
 * The `code` of a thrown error, or ''. Library errors' codes are permanent strings, so the
 * entry needs no library class to recognise them (and does not load the library for it).
 */
function errorCodeOf(error: unknown): string {
  const code = typeof error === 'object' && error !== null ?
    (error as { code?: unknown }).code : undefined;
  return typeof code === 'string' ? code : '';
}

/** Maps an error thrown by a command to its exit status, printing its message. */
export function exitStatusOf(cli: CliContext, error: unknown): number {
  if (error instanceof OutputError) {
    const line = outputFailureLine(error.outputName, error.failure);
    if (line !== null) tell(cli, line);
    return EXIT_IO_ERROR;
  }
  if (error instanceof UsageError) {
    tell(cli, `dmio: ${error.message}\n`);
    return EXIT_USAGE;
  }
  tell(cli, `dmio: ${error instanceof Error ? error.message : String(error)}\n`);
  return ARGUMENT_CODES.has(errorCodeOf(error)) ? EXIT_USAGE : EXIT_IO_ERROR;
}

/**
 * The package's version. The source (src/cli) and the bundle (dist/bundle) both sit two levels
 * below package.json.
 */
export function packageVersion(): string {
  const text = readFileSync(new URL('../../package.json', import.meta.url), 'utf8');
  return (JSON.parse(text) as { version: string }).version;
}

/** Adds one command, its options and its action to the program. */
type Register = (program: Command, run: RunCommand) => void;

/**
 * Each command's module, in the order help lists them. A command's module (and the library it
 * needs: devices, kcopyd, NBD, koffi) is loaded only when that command runs or help lists it,
 * so `dmio --version` loads none of them (docs/cli.md, Start-up).
 */
const COMMANDS: ReadonlyArray<readonly [string, () => Promise<Register>]> = [
  ['copy', async () => (await import('./commands/copy.js')).registerCopy],
  ['zero', async () => (await import('./commands/zero.js')).registerZero],
  ['read', async () => (await import('./commands/read.js')).registerRead],
  ['write', async () => (await import('./commands/write.js')).registerWrite],
  ['info', async () => (await import('./commands/info.js')).registerInfo],
  ['bench', async () => (await import('./commands/bench.js')).registerBench],
  ['serve', async () => (await import('./commands/serve.js')).registerServe],
];

/**
 * The commands `argv` needs registered: the one it names (`dmio NAME …`, `dmio help NAME`),
 * none for `--version` alone, and every one otherwise (help, no command, an unknown one, so
 * that commander lists them or suggests the nearest).
 */
export function commandsNeeded(argv: readonly string[]): readonly string[] {
  const all = COMMANDS.map(([name]) => name);
  const positionals = argv.filter((arg) => !arg.startsWith('-'));
  const named = positionals[0] === 'help' ? positionals[1] : positionals[0];
  if (named !== undefined) return all.includes(named) ? [named] : all;
  if (positionals.length === 0 && argv.some((arg) => arg === '-V' || arg === '--version') &&
      !argv.some((arg) => arg === '-h' || arg === '--help')) {
    return [];
  }
  return all;
}

/**
 * Builds the program with the commands `argv` needs (`commandsNeeded`); `run` receives each
 * command's work. Help and parse errors go to the context's stdout and stderr.
 */
export async function buildProgram(
  cli: CliContext, run: RunCommand, argv: readonly string[],
): Promise<Command> {
  const needed = commandsNeeded(argv);
  const registers = await Promise.all(COMMANDS.filter(([name]) => needed.includes(name))
    .map(async ([, load]) => await load()));
  const program = new Command('dmio')
    .configureOutput({
      writeOut: (text) => cli.stdout.stream.write(text),
      writeErr: (text) => tell(cli, text),
    })
    .description('dm-io and kcopyd for files, block devices, RAM and NBD: copy one region to ' +
      'many, zero, read, write, inspect')
    .version(packageVersion(), '-V, --version', 'print the version and exit')
    .exitOverride()
    .showHelpAfterError('(run with --help for usage)');
  for (const register of registers) register(program, run);
  for (const command of program.commands) command.exitOverride();
  return program;
}

/**
 * Runs the CLI on `argv` (without node and script) and resolves with the exit status, which is
 * at least 1 when a write to stdout failed. `deps` replaces what the program takes from the
 * process (streams, signals, exit, and a wrapper around every device it opens).
 *
 * @example
 * const status = await main(['copy', 'random:1M', 'out.img', '--json'], { stdout, stderr });
 */
export async function main(argv: readonly string[], deps: CliDeps = {}): Promise<number> {
  const cli = cliContext(deps);
  const stdio = watchStdio(cli);
  try {
    const { status, stdoutTold } = await runProgram(cli, argv);
    const failure = await stdio.settle();
    if (failure === null) return status;
    if (!stdoutTold) {
      const line = outputFailureLine(STDOUT_NAME, failure);
      if (line !== null) tell(cli, line);
    }
    return Math.max(status, EXIT_IO_ERROR);
  } finally {
    stdio.stop();
  }
}

/** The status of the command, and whether a stdout failure was already told on the way. */
async function runProgram(cli: CliContext, argv: readonly string[]):
Promise<{ status: number; stdoutTold: boolean }> {
  try {
    return { status: await parseAndRun(cli, argv), stdoutTold: false };
  } catch (error) {
    const stdoutTold = error instanceof OutputError && error.outputName === STDOUT_NAME;
    return { status: exitStatusOf(cli, error), stdoutTold };
  }
}

/** Parses `argv` and runs the command it names; errors of the command are thrown. */
async function parseAndRun(cli: CliContext, argv: readonly string[]): Promise<number> {
  let pending: Promise<number> | null = null;
  const program = await buildProgram(cli, (work) => {
    pending = work(cli);
  }, argv);
  try {
    await program.parseAsync([...argv], { from: 'user' });
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help or the version that was asked for (--help, `help copy`, --version) exits 0 in
      // commander; help shown because no command was given, and every parse error, is bad usage.
      return error.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    }
    throw error;
  }
  if (pending === null) {
    program.outputHelp({ error: true });
    return EXIT_USAGE;
  }
  return await (pending as Promise<number>);
}

/** The process entry the `dmio` bin calls: runs `main` on the process's arguments. */
export async function runCli(): Promise<void> {
  keepClosedStdoutClosed();
  const status = await main(process.argv.slice(2));
  process.exitCode = status;
}
