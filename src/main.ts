#!/usr/bin/env node
// The dataset-cache-csi command: the CSI driver itself, or one of its subcommands (demo, ctl, launcher, prefetch).
import { ConfigError, parseConfig, USAGE } from './config.js';
import { startDriver } from './driver.js';
import { createLogger } from './log.js';
import { packageVersion } from './version.js';
import { messageOf } from './util/errors.js';

/** Commands besides the driver itself, loaded only when asked for. */
const SUBCOMMANDS: Record<string, () => Promise<(argv: string[]) => Promise<number>>> = {
  demo: async () => (await import('./demo/demo.js')).runDemo,
  ctl: async () => (await import('./ctl/ctl.js')).runCtl,
  launcher: async () => (await import('./supervisor/launcher-command.js')).runLauncherCommand,
  prefetch: async () => (await import('./ctl/prefetch-command.js')).runPrefetchCommand,
};

async function main(argv: string[]): Promise<number> {
  const subcommand = SUBCOMMANDS[argv[0] ?? ''];
  if (subcommand) return (await subcommand())(argv.slice(1));
  if (argv.includes('--version')) {
    process.stdout.write(`dataset-cache-csi ${packageVersion()}\n`);
    return 0;
  }
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  let config;
  try {
    config = parseConfig(argv);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`dataset-cache-csi: ${err.message}\n${USAGE}\n`);
      return 2;
    }
    throw err;
  }
  // Defence in depth: file operations that touch FUSE run in child processes, but a larger libuv
  // pool keeps the driver responsive should one slip through and hang on a dead mount.
  process.env.UV_THREADPOOL_SIZE ??= '16';
  const log = createLogger(config.logLevel);
  const driver = await startDriver(config, log);
  // For memory questions on a live node: `kill -USR2 <pid>` logs the heap and RSS, after a full
  // collection when node runs with --expose-gc (the soak benchmark does).
  process.on('SIGUSR2', () => {
    const collect = (globalThis as { gc?: () => void }).gc;
    collect?.();
    log.info({ collected: collect !== undefined, ...process.memoryUsage() }, 'memory');
  });
  await new Promise<void>((resolve) => {
    const stop = (signal: NodeJS.Signals): void => {
      log.info({ signal }, 'shutting down');
      resolve();
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  await driver.close();
  log.info('stopped');
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`dataset-cache-csi: ${messageOf(err)}\n`);
    process.exitCode = 1;
  },
);
