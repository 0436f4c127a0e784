// The driver's version, as package.json gives it.
import { readFileSync } from 'node:fs';

/** package.json sits one level above both src/ and dist/. */
export function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}
