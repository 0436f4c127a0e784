// The error a malformed or unknown dataset parameter raises: the handlers answer it with INVALID_ARGUMENT.
export class ParameterError extends Error {}
