// Kubernetes-style sizes ("15Gi") and durations ("1h30m") as parameters and flags give them, in bytes and milliseconds.
const BINARY: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40 };
const DECIMAL: Record<string, number> = { '': 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12 };

/** Kubernetes-style quantity ("15Gi", "500M", "1073741824") to bytes; undefined when malformed. */
export function parseQuantity(value: string): number | undefined {
  const match = /^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(value);
  if (!match) return undefined;
  const unit = match[2] ?? '';
  const factor = BINARY[unit] ?? DECIMAL[unit];
  if (factor === undefined) return undefined;
  const bytes = Math.floor(Number(match[1]) * factor);
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

/** "30s", "10m", "2h", "1h30m" to milliseconds; undefined when malformed. */
export function parseDuration(value: string): number | undefined {
  if (!/^(?:[0-9]+(?:ms|s|m|h))+$/.test(value)) return undefined;
  const unitMs: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  let total = 0;
  for (const part of value.matchAll(/([0-9]+)(ms|s|m|h)/g)) {
    total += Number(part[1]) * (unitMs[part[2] as string] as number);
  }
  return total;
}
