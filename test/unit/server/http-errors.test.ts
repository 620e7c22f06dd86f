import { describe, expect, it } from 'vitest';
import { KvpackError } from '../../../common/errors.js';
import { errorBody, toCatalogError } from '../../../server/http-errors.js';

const limits = { maxBodyBytes: 4096, maxUploadBytes: 8192 };

describe('toCatalogError', () => {
  it('keeps a KvpackError', () => {
    const original = new KvpackError('DOCUMENT_NOT_FOUND', 'No document x.', { documentId: 'x' });
    expect(toCatalogError(original, limits)).toEqual({ error: original, internal: false });
  });

  it('names every field of a schema failure', () => {
    const { error } = toCatalogError(
      {
        message: 'body/topK must be integer',
        validationContext: 'body',
        validation: [
          { instancePath: '/topK', keyword: 'type', message: 'must be integer', params: { type: 'integer' } },
          { instancePath: '', keyword: 'additionalProperties', message: 'must NOT have additional properties', params: { additionalProperty: 'colour' } },
          { instancePath: '', keyword: 'required', message: "must have required property 'question'", params: { missingProperty: 'question' } },
          { instancePath: '/strategy', keyword: 'enum', message: 'must be equal to one of the allowed values', params: { allowedValues: ['full', 'packet'] } },
        ],
      },
      limits,
    );
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toBe(
      'Invalid request body: topK must be of type integer; colour is not a known field; question is required; strategy must be one of "full", "packet".',
    );
    expect(error.details.fields).toEqual(['topK', 'colour', 'question', 'strategy']);
  });

  it('maps a body over the limit to PAYLOAD_TOO_LARGE', () => {
    const { error } = toCatalogError({ code: 'FST_ERR_CTP_BODY_TOO_LARGE', statusCode: 413, message: 'Request body is too large' }, limits);
    expect(error.code).toBe('PAYLOAD_TOO_LARGE');
    expect(error.message).toContain('limit of 4096 bytes (maxBodyBytes)');
  });

  it('maps an upload over the limit to PAYLOAD_TOO_LARGE', () => {
    const { error } = toCatalogError({ code: 'FST_REQ_FILE_TOO_LARGE', statusCode: 413, message: 'request file too large' }, limits);
    expect(error.code).toBe('PAYLOAD_TOO_LARGE');
    expect(error.message).toContain('limit of 8192 bytes (maxUploadBytes)');
  });

  it('maps malformed JSON to INVALID_ARGUMENT', () => {
    const { error } = toCatalogError({ code: 'FST_ERR_CTP_INVALID_JSON_BODY', statusCode: 400, message: 'Body is not valid JSON' }, limits);
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toBe('The request body is not valid JSON; send a JSON object.');
  });

  it('hides an unexpected error behind INTERNAL_ERROR', () => {
    const { error, internal } = toCatalogError(new TypeError('cannot read x of undefined'), limits);
    expect(internal).toBe(true);
    expect(error.code).toBe('INTERNAL_ERROR');
    expect(error.message).not.toContain('cannot read');
  });
});

describe('errorBody', () => {
  it('omits empty details', () => {
    expect(errorBody(new KvpackError('ROUTE_NOT_FOUND', 'No route GET /x.'))).toEqual({ error: { code: 'ROUTE_NOT_FOUND', message: 'No route GET /x.' } });
  });

  it('carries details', () => {
    const body = errorBody(new KvpackError('QUESTION_TOO_LONG', 'Too long.', { limit: 10 }));
    expect(body.error.details).toEqual({ limit: 10 });
  });
});
