// Checks of CSI request fields that every service shares: ids, absolute paths and volume capabilities.
import { posix } from 'node:path';
import type { VolumeCapability__Output } from './generated/csi/v1/VolumeCapability.js';
import { invalidArgument } from './errors.js';

/** Control characters (NUL, newline, escape…) have no place in ids or paths and break log lines. */
// eslint-disable-next-line no-control-regex
const CONTROL = /[\0-\x1f\x7f]/;

/** CSI recommends ids and names of at most 128 bytes; kubelet and sidecars store them in objects. */
export const MAX_ID_BYTES = 128;

export function requireId(value: string, field: string): string {
  if (value === '') throw invalidArgument(`${field} is required`);
  if (Buffer.byteLength(value) > MAX_ID_BYTES) {
    throw invalidArgument(
      `${field} is ${Buffer.byteLength(value)} bytes; at most ${MAX_ID_BYTES} are allowed`,
    );
  }
  if (CONTROL.test(value)) throw invalidArgument(`${field} contains control characters`);
  return value;
}

/** An absolute path, normalized, without '..' segments or control characters. */
export function requirePath(value: string, field: string): string {
  if (value === '') throw invalidArgument(`${field} is required`);
  if (CONTROL.test(value)) throw invalidArgument(`${field} contains control characters`);
  if (!value.startsWith('/'))
    throw invalidArgument(`${field} must be an absolute path, got "${value}"`);
  if (value.split('/').includes('..')) throw invalidArgument(`${field} must not contain '..'`);
  if (Buffer.byteLength(value) > 4096) throw invalidArgument(`${field} is longer than 4096 bytes`);
  const normalized = posix.normalize(value);
  return normalized.length > 1 ? normalized.replace(/\/+$/, '') : normalized;
}

const READER_ONLY = new Set(['SINGLE_NODE_READER_ONLY', 'MULTI_NODE_READER_ONLY']);
const KNOWN_MODES = new Set([
  'SINGLE_NODE_WRITER',
  'SINGLE_NODE_READER_ONLY',
  'MULTI_NODE_READER_ONLY',
  'MULTI_NODE_SINGLE_WRITER',
  'MULTI_NODE_MULTI_WRITER',
  'SINGLE_NODE_SINGLE_WRITER',
  'SINGLE_NODE_MULTI_WRITER',
]);

/** Why this driver cannot serve a capability, or undefined when it can. */
export function unsupportedCapability(capability: VolumeCapability__Output): string | undefined {
  if (capability.access_type !== 'mount') {
    return capability.access_type === 'block'
      ? 'block access is not supported: datasets are file systems; use access type mount'
      : 'access type is required (mount)';
  }
  const mode = String(capability.access_mode?.mode ?? 'UNKNOWN');
  if (!KNOWN_MODES.has(mode)) return `access mode ${mode} is not supported`;
  return undefined;
}

export function requireCapability(
  capability: VolumeCapability__Output | null,
  field: string,
): VolumeCapability__Output {
  if (!capability) throw invalidArgument(`${field} is required`);
  const problem = unsupportedCapability(capability);
  if (problem) throw invalidArgument(`${field}: ${problem}`);
  return capability;
}

export function isReaderOnly(capability: VolumeCapability__Output): boolean {
  return READER_ONLY.has(String(capability.access_mode?.mode));
}
