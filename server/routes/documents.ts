import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Type, type Static } from '@sinclair/typebox';
import { Ajv } from 'ajv';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { KvpackError } from '../../common/errors.js';
import type { LoadedDocument } from '../../ingest/loaders.js';
import { isBlank, normalizeString } from '../../ingest/normalize.js';
import { sourceKindOf, supportedExtensions } from '../../ingest/sources.js';
import { bearerTokenHook } from '../auth.js';
import type { ServerContext } from '../context.js';
import { documentFromText } from '../ingestion.js';
import type { JobInput, UploadedFile } from '../jobs.js';

/** Source path of documents posted as JSON. */
export const API_SOURCE = 'api';
/** Files per multipart upload at most. */
export const MAX_UPLOAD_FILES = 32;

const documentSchema = Type.Object(
  {
    id: Type.Optional(Type.String({ minLength: 1, maxLength: 512, pattern: '^[^\\u0000-\\u001f]+$', description: 'Document id. Default: doc: and a hash of title and text.' })),
    title: Type.Optional(Type.String({ maxLength: 1000 })),
    text: Type.String({ minLength: 1 }),
  },
  { additionalProperties: false },
);

const postDocumentsSchema = Type.Object({ documents: Type.Array(documentSchema, { minItems: 1, maxItems: 10_000 }) }, { additionalProperties: false });
type PostDocumentsBody = Static<typeof postDocumentsSchema>;

const listQuerySchema = Type.Object(
  {
    limit: Type.Optional(Type.String({ pattern: '^[0-9]{1,6}$' })),
    offset: Type.Optional(Type.String({ pattern: '^[0-9]{1,9}$' })),
  },
  { additionalProperties: false },
);
type ListQuery = Static<typeof listQuerySchema>;

const DEFAULT_LIST_LIMIT = 1000;

// The body of POST /v1/documents is either JSON or multipart, so it is validated in the handler,
// with the same strict settings as the route schemas.
const validatePostBody = new Ajv({ allErrors: true, strict: false }).compile<PostDocumentsBody>(postDocumentsSchema);

/** Document routes: ingestion jobs from JSON or uploads, listing, deletion, job status. */
export function registerDocumentRoutes(app: FastifyInstance, context: ServerContext): void {
  const requireToken = bearerTokenHook(context.config.apiToken);
  const writeHooks = requireToken ? { onRequest: requireToken } : {};

  app.post('/v1/documents', { ...writeHooks }, async (request, reply) => {
    const input = request.isMultipart() ? await saveUploads(request) : { kind: 'documents' as const, documents: documentsFromBody(request.body) };
    let job;
    try {
      job = context.jobs.submit(input);
    } catch (error) {
      if (input.kind === 'upload') await rm(input.tempDir, { recursive: true, force: true });
      throw error;
    }
    return reply.code(202).header('location', `/v1/jobs/${job.id}`).send({ job });
  });

  app.get<{ Querystring: ListQuery }>('/v1/documents', { schema: { querystring: listQuerySchema } }, async (request) => {
    const limit = request.query.limit === undefined ? DEFAULT_LIST_LIMIT : Number(request.query.limit);
    const offset = request.query.offset === undefined ? 0 : Number(request.query.offset);
    const all = context.store.listDocuments();
    return { total: all.length, offset, documents: all.slice(offset, offset + limit) };
  });

  app.delete<{ Params: { id: string } }>('/v1/documents/:id', { ...writeHooks }, async (request) => {
    const { id } = request.params;
    await context.writeLock.run(() => context.store.deleteDocument(id));
    request.log.info({ documentId: id }, 'document deleted');
    return { deleted: id };
  });

  app.get<{ Params: { id: string } }>('/v1/jobs/:id', async (request) => ({ job: context.jobs.get(request.params.id) }));
}

/** Validates a JSON body and turns it into documents; ids default to a hash of title and text. */
function documentsFromBody(body: unknown): LoadedDocument[] {
  if (!validatePostBody(body)) {
    throw Object.assign(new Error('invalid body'), { validation: validatePostBody.errors, validationContext: 'body' });
  }
  const seen = new Set<string>();
  return body.documents.map((given, index) => {
    const text = normalizeString(given.text).text;
    const title = normalizeString(given.title ?? '').text.trim();
    if (isBlank(text)) {
      throw new KvpackError('INVALID_ARGUMENT', `Invalid request body: documents.${index}.text contains only white space; send text to ingest.`, {
        fields: [`documents.${index}.text`],
      });
    }
    const id = given.id ?? `doc:${createHash('sha256').update(title).update('\0').update(text).digest('hex').slice(0, 24)}`;
    if (seen.has(id)) {
      throw new KvpackError('INVALID_ARGUMENT', `Invalid request body: documents.${index} repeats the document id ${JSON.stringify(id)}; send each document once.`, {
        fields: [`documents.${index}.id`],
      });
    }
    seen.add(id);
    return documentFromText(id, API_SOURCE, title, text);
  });
}

/** Saves the files of a multipart upload in a new temporary folder, which the job removes when it finishes. */
async function saveUploads(request: FastifyRequest): Promise<JobInput> {
  const tempDir = await mkdtemp(path.join(tmpdir(), 'kvpack-upload-'));
  const files: UploadedFile[] = [];
  try {
    for await (const part of request.parts()) {
      if (part.type !== 'file') {
        throw new KvpackError('INVALID_ARGUMENT', `Invalid upload: unexpected field ${JSON.stringify(part.fieldname)}; send only file parts.`, { fields: [part.fieldname] });
      }
      const name = path.basename(part.filename ?? '');
      const kind = sourceKindOf(name);
      if (!name || !kind) {
        part.file.resume();
        throw new KvpackError(
          'INVALID_ARGUMENT',
          `Invalid upload: ${JSON.stringify(part.filename)} is not a supported file; name files with one of ${supportedExtensions.join(', ')}.`,
          { file: part.filename },
        );
      }
      const saved = path.join(tempDir, `${files.length}-${name}`);
      await pipeline(part.file, createWriteStream(saved));
      files.push({ path: saved, name, kind });
    }
    if (files.length === 0) {
      throw new KvpackError('INVALID_ARGUMENT', 'Invalid upload: the multipart body has no file part; attach at least one file.');
    }
    return { kind: 'upload', tempDir, files };
  } catch (error) {
    await rm(tempDir, { recursive: true, force: true });
    throw error;
  }
}
