import { errorCatalog, isKvpackError, KvpackError, type ErrorCode } from '../common/errors.js';
import { describeSchemaProblem } from '../common/schema-issues.js';

/** The body of every error response: a stable code from the catalog, a message and optional details. */
export interface ErrorBody {
  error: { code: ErrorCode; message: string; details?: Record<string, unknown> };
}

/** One failed check of a request schema, as fastify reports it (ajv error objects). */
interface ValidationIssue {
  instancePath: string;
  keyword: string;
  message?: string;
  params: Record<string, unknown>;
}

interface FrameworkError {
  code?: string;
  statusCode?: number;
  message: string;
  validation?: ValidationIssue[];
  validationContext?: string;
}

/** Error codes of fastify and @fastify/multipart that name a request the client can fix. */
const frameworkCodes: Readonly<Record<string, (error: FrameworkError, limits: RequestLimits, contentType: string | undefined) => KvpackError>> = {
  FST_ERR_CTP_BODY_TOO_LARGE: (_, limits) =>
    new KvpackError('PAYLOAD_TOO_LARGE', `The request body is larger than the limit of ${limits.maxBodyBytes} bytes (maxBodyBytes); send a smaller body.`, {
      limitBytes: limits.maxBodyBytes,
    }),
  FST_REQ_FILE_TOO_LARGE: (_, limits) =>
    new KvpackError('PAYLOAD_TOO_LARGE', `An uploaded file is larger than the limit of ${limits.maxUploadBytes} bytes (maxUploadBytes); split it into smaller files.`, {
      limitBytes: limits.maxUploadBytes,
    }),
  FST_PARTS_LIMIT: () => new KvpackError('PAYLOAD_TOO_LARGE', 'The multipart request has too many parts; upload fewer files per request.'),
  FST_FILES_LIMIT: () => new KvpackError('PAYLOAD_TOO_LARGE', 'The multipart request has too many files; upload fewer files per request.'),
  FST_FIELDS_LIMIT: () => new KvpackError('PAYLOAD_TOO_LARGE', 'The multipart request has too many fields; send fewer fields per request.'),
  FST_ERR_CTP_INVALID_MEDIA_TYPE: (_, _limits, contentType) =>
    new KvpackError(
      'UNSUPPORTED_MEDIA_TYPE',
      `Unsupported content type ${JSON.stringify(contentType ?? '')}; send application/json, or multipart/form-data where the route accepts uploads.`,
    ),
  FST_INVALID_MULTIPART_CONTENT_TYPE: () =>
    new KvpackError('UNSUPPORTED_MEDIA_TYPE', 'The request is not multipart/form-data; send files as multipart/form-data or documents as application/json.'),
  FST_ERR_CTP_EMPTY_JSON_BODY: () => new KvpackError('INVALID_ARGUMENT', 'The request body is empty but its content type is application/json; send a JSON object.'),
  FST_ERR_CTP_INVALID_JSON_BODY: () => new KvpackError('INVALID_ARGUMENT', 'The request body is not valid JSON; send a JSON object.'),
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: () => new KvpackError('INVALID_ARGUMENT', 'The Content-Length header does not match the body length.'),
  FST_MP_PREMATURE_CLOSE: () => new KvpackError('INVALID_ARGUMENT', 'The request was closed before the multipart body was complete.'),
  FST_PROTO_VIOLATION: () => new KvpackError('INVALID_ARGUMENT', 'A multipart field is named __proto__ or constructor; rename it.'),
};

/** The limits that error messages name. */
export interface RequestLimits {
  maxBodyBytes: number;
  maxUploadBytes: number;
}

/**
 * Maps any error a route or fastify raised to a catalog error. KvpackErrors stay as they are, and
 * schema failures become INVALID_ARGUMENT naming the field. Errors of fastify and
 * @fastify/multipart get their catalog code. Anything else is INTERNAL_ERROR with
 * `internal: true`, for the caller to log.
 */
export function toCatalogError(error: unknown, limits: RequestLimits, contentType?: string): { error: KvpackError; internal: boolean } {
  if (isKvpackError(error)) {
    return { error, internal: false };
  }
  const framework = error as FrameworkError;
  if (framework?.validation) {
    return { error: validationError(framework.validation, framework.validationContext ?? 'body'), internal: false };
  }
  const mapped = framework?.code ? frameworkCodes[framework.code] : undefined;
  if (mapped) {
    return { error: mapped(framework, limits, contentType), internal: false };
  }
  const message = typeof framework?.message === 'string' ? framework.message : String(error);
  const status = framework?.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return { error: new KvpackError(status === 413 ? 'PAYLOAD_TOO_LARGE' : 'INVALID_ARGUMENT', `Invalid request: ${message}.`), internal: false };
  }
  return { error: new KvpackError('INTERNAL_ERROR', 'Internal error; the server log has the details under the request id.'), internal: true };
}

export function errorBody(error: KvpackError): ErrorBody {
  const details = Object.keys(error.details).length > 0 ? { ...error.details } : undefined;
  return { error: { code: error.code, message: error.message, ...(details ? { details } : {}) } };
}

export function statusOf(code: ErrorCode): number {
  return errorCatalog[code].status;
}

/** Turns failed schema checks into one INVALID_ARGUMENT that names every offending field. */
function validationError(issues: ValidationIssue[], context: string): KvpackError {
  const problems = issues.map((issue) => describeIssue(issue, context));
  const fields = issues.map((issue) => fieldOf(issue, context));
  return new KvpackError('INVALID_ARGUMENT', `Invalid request ${context}: ${[...new Set(problems)].join('; ')}.`, { fields: [...new Set(fields)] });
}

function describeIssue(issue: ValidationIssue, context: string): string {
  const field = fieldOf(issue, context);
  switch (issue.keyword) {
    case 'required':
      return `${field} is required`;
    case 'additionalProperties':
      return `${field} is not a known field`;
    case 'enum':
      return `${field} must be one of ${(issue.params.allowedValues as unknown[]).map((value) => JSON.stringify(value)).join(', ')}`;
    default:
      return `${field} ${describeSchemaProblem(issue)}`;
  }
}

/** Dotted name of the field an issue is about, such as `topK` or `documents.3.text`. */
function fieldOf(issue: ValidationIssue, context: string): string {
  const parts = issue.instancePath.split('/').filter(Boolean);
  if (issue.keyword === 'required') parts.push(String(issue.params.missingProperty));
  if (issue.keyword === 'additionalProperties') parts.push(String(issue.params.additionalProperty));
  return parts.length > 0 ? parts.join('.') : context;
}
