#!/usr/bin/env node
import { ConfigError, parseConfig, USAGE } from './config.js';
import { startDriver } from './driver.js';
import { createLogger } from './log.js';

async function main(argv: string[]): Promise<number> {
  if (argv[0] === 'demo') {
    const { runDemo } = await import('./demo/demo.js');
    return runDemo(argv.slice(1));
  }
  if (argv[0] === 'ctl') {
    const { runCtl } = await import('./ctl/ctl.js');
    return runCtl(argv.slice(1));
  }
  if (argv[0] === 'launcher') {
    const { runLauncherCommand } = await import('./supervisor/launcher-command.js');
    return runLauncherCommand(argv.slice(1));
  }
  if (argv[0] === 'prefetch') {
    const { runPrefetchCommand } = await import('./prefetch/cli.js');
    return runPrefetchCommand(argv.slice(1));
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
    process.stderr.write(
      `dataset-cache-csi: ${err instanceof Error ? err.message : String(err)}\n`,
    );
    process.exitCode = 1;
  },
);
