/**
 * The error catalog. Every error that kvpack raises for a caller to act on carries one of these
 * codes; the HTTP layer maps the code to its status, and `docs/errors.md` documents each code
 * (a test keeps the two in step).
 */
export const errorCatalog = {
  INVALID_ARGUMENT: { status: 400, summary: 'A value passed to a command or function is invalid.' },
  MODEL_NOT_FOUND: { status: 404, summary: 'The model folder does not exist or contains no ONNX model.' },
  MODEL_CONFIG_INVALID: { status: 422, summary: 'The model folder has a missing or invalid config.json.' },
  UNSUPPORTED_ARCHITECTURE: { status: 422, summary: 'The model architecture or one of its settings is not supported.' },
  UNSUPPORTED_ROPE_SCALING: { status: 422, summary: 'The rope_scaling kind cannot be built or re-rotated exactly.' },
  UNSUPPORTED_ONNX_GRAPH: { status: 422, summary: 'The ONNX graph does not have the inputs and outputs kvpack needs.' },
  CHECKPOINT_INVALID: { status: 422, summary: 'A llama2.c checkpoint or tokenizer file is malformed.' },
  TOKENIZER_INVALID: { status: 422, summary: 'The tokenizer files of a model folder are missing or malformed.' },
  SEQUENCE_TOO_LONG: { status: 413, summary: 'The sequence is longer than the maximum positions of the model.' },
  KV_CACHE_SHAPE_MISMATCH: { status: 422, summary: 'A KV cache does not have the shape the model expects.' },
  GENERATION_CANCELLED: { status: 499, summary: 'Generation stopped because its caller cancelled it.' },
} as const satisfies Record<string, { status: number; summary: string }>;

export type ErrorCode = keyof typeof errorCatalog;

/** An error with a stable code from the catalog, a message that names the value and the fix. */
export class KvpackError extends Error {
  readonly code: ErrorCode;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.name = 'KvpackError';
    this.code = code;
    this.details = details;
  }

  get status(): number {
    return errorCatalog[this.code].status;
  }
}

export function isKvpackError(error: unknown, code?: ErrorCode): error is KvpackError {
  return error instanceof KvpackError && (code === undefined || error.code === code);
}
