// Prefetch patterns, a dataset parameter: parsing them and the glob helpers fills and walks share.
import picomatch from 'picomatch';
import { ParameterError } from './parameter-error.js';

/** A prefetch pattern: files matching `glob` are read into the cache, or only listed and stat'ed. */
export interface PrefetchPattern {
  glob: string;
  metadataOnly: boolean;
}

const MAX_PREFETCH_PATTERNS = 32;

/**
 * Comma-separated globs relative to the dataset root (`train/**`, `*.parquet`); a pattern ending in
 * `/` warms only the metadata of that tree (listings and attributes, no file content).
 */
export function parsePrefetch(value: string | undefined): PrefetchPattern[] {
  if (value === undefined || value.trim() === '') return [];
  const patterns = value
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p !== '');
  if (patterns.length > MAX_PREFETCH_PATTERNS) {
    throw new ParameterError(`parameter prefetch has more than ${MAX_PREFETCH_PATTERNS} patterns`);
  }
  return patterns.map((pattern) => {
    if (/[\0\n\r]/.test(pattern)) {
      throw new ParameterError('parameter prefetch contains control characters');
    }
    if (pattern.startsWith('/') || pattern.split('/').includes('..')) {
      throw new ParameterError(
        `parameter prefetch pattern "${pattern}" must be relative to the dataset and must not contain '..'`,
      );
    }
    const metadataOnly = pattern.endsWith('/');
    return { glob: metadataOnly ? `${pattern}**` : pattern, metadataOnly };
  });
}

/** The directory a glob can only match below (its leading literal part). */
export function globBase(glob: string): string {
  const scanned = picomatch.scan(glob);
  return scanned.isGlob ? scanned.base : glob.split('/').slice(0, -1).join('/');
}
