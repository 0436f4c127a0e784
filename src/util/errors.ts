// What an error says, whatever was thrown: for log fields, gRPC messages and conditions.

/** An Error's message, or the thrown value as text (a string, a code) when it is no Error. */
export const messageOf = (err: unknown): string =>
  err instanceof Error ? err.message : String(err);
