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
  STORE_NOT_FOUND: { status: 404, summary: 'The store folder does not exist or has no store.json.' },
  STORE_INVALID: { status: 422, summary: 'The store manifest or catalog is malformed or from an unsupported format version.' },
  STORE_MISMATCH: { status: 409, summary: 'The store was built with another model, tokenizer or embedder than the one given.' },
  STORE_LOCKED: { status: 409, summary: 'Another ingestion holds the lock of the store.' },
  SOURCE_NOT_FOUND: { status: 404, summary: 'A file or folder given for ingestion does not exist.' },
  EMBEDDER_INVALID: { status: 422, summary: 'The embedding model folder is missing or cannot be run as a feature extractor.' },
  DOCUMENT_NOT_FOUND: { status: 404, summary: 'No document with this id is in the store.' },
  CHUNK_NOT_FOUND: { status: 404, summary: 'No chunk with this id is in the store.' },
  PACKET_NOT_FOUND: { status: 404, summary: 'No KV packet is stored for the chunk, adapter and kind.' },
  PACKET_CORRUPT: { status: 500, summary: 'A stored KV packet file is truncated or fails its checksum, so it must be rebuilt.' },
  PACKET_MISMATCH: { status: 409, summary: 'A stored KV packet was built for another model, tokenizer or adapter.' },
  PACKET_VERSION_UNSUPPORTED: { status: 500, summary: 'A stored KV packet has a format version newer than this kvpack reads.' },
  ADAPTER_NOT_FOUND: { status: 404, summary: 'The adapter file does not exist.' },
  ADAPTER_INVALID: { status: 422, summary: 'An adapter file is not a valid kvpack adapter safetensors file.' },
  ADAPTER_MISMATCH: { status: 409, summary: 'An adapter was trained for another model or has another vector width.' },
  CONFIG_INVALID: { status: 400, summary: 'A server configuration file, environment variable or flag is unknown or has an invalid value.' },
  UNAUTHORIZED: { status: 401, summary: 'The route requires the configured bearer token and the request has none or another one.' },
  ROUTE_NOT_FOUND: { status: 404, summary: 'No route matches the request method and path.' },
  JOB_NOT_FOUND: { status: 404, summary: 'No ingestion job with this id is known to the server.' },
  PAYLOAD_TOO_LARGE: { status: 413, summary: 'The request body or uploaded file is larger than the configured limit.' },
  QUESTION_TOO_LONG: { status: 413, summary: 'The question has more characters than the configured limit.' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, summary: 'The request body has a content type the route does not accept.' },
  TOO_MANY_REQUESTS: { status: 429, summary: 'Every generation slot or ingestion queue place is taken; retry after the Retry-After seconds.' },
  INTERNAL_ERROR: { status: 500, summary: 'An unexpected error; the server log has the details under the request id.' },
  SHUTTING_DOWN: { status: 503, summary: 'The server is shutting down and accepts no new work.' },
  MODEL_CHECKSUM_MISMATCH: { status: 422, summary: 'A model file does not have the sha256 checksum it is published with.' },
  MODEL_DOWNLOAD_FAILED: { status: 502, summary: 'A model file could not be downloaded.' },
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
