// The driver's logger: structured JSON on stderr, with secrets redacted.
import { pino, type Logger } from 'pino';

/**
 * Structured logs on stderr (stdout stays free for command output). Handlers never log request
 * bodies; the redaction paths are a second line of defence for any object carrying secrets.
 */
export function createLogger(level: string, destination: number | string = 2): Logger {
  return pino(
    {
      level,
      base: { app: 'dataset-cache-csi' },
      redact: {
        paths: ['secrets', '*.secrets', 'req.secrets', 'request.secrets', 'env', '*.env'],
        censor: '[redacted]',
      },
    },
    pino.destination({ dest: destination, sync: true }),
  );
}
