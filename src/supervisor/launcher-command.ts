// `dataset-cache-csi launcher`: runs the client launcher on its socket until SIGTERM; the clients it started keep running.
import { parseArgs } from 'node:util';
import { createLogger } from '../log.js';
import { DEFAULT_LAUNCHABLE, startLauncher } from './launcher.js';
import { messageOf } from '../util/errors.js';

const USAGE = `usage: dataset-cache-csi launcher --socket PATH [--allow PROGRAM]... [--log-level LEVEL]
  Starts cache clients for the driver (--launcher-socket), in this process's container.`;

/** Runs until SIGTERM/SIGINT; the clients it started keep running after it stops. */
export async function runLauncherCommand(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        socket: { type: 'string' },
        allow: { type: 'string', multiple: true },
        'log-level': { type: 'string', default: 'info' },
      },
    }));
  } catch (err) {
    process.stderr.write(`${messageOf(err)}\n${USAGE}\n`);
    return 2;
  }
  if (!values.socket?.startsWith('/')) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  const log = createLogger(values['log-level']);
  const launcher = await startLauncher(values.socket, log, [
    ...DEFAULT_LAUNCHABLE,
    ...(values.allow ?? []),
  ]);
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
  });
  await launcher.close();
  log.info('launcher stopped; launched clients keep running');
  return 0;
}
