import { Type, type Static } from '@sinclair/typebox';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { KvpackError } from '../../common/errors.js';
import { strategies, type Strategy } from '../../packets/strategies.js';
import type { QueryResult } from '../../query/types.js';
import type { ServerConfig } from '../config.js';
import { errorBody, toCatalogError } from '../http-errors.js';
import type { ServerContext } from '../context.js';
import { EventStream } from '../sse.js';

function querySchema(config: ServerConfig) {
  return Type.Object(
    {
      question: Type.String({ minLength: 1, description: 'The question to answer from the store.' }),
      topK: Type.Optional(Type.Integer({ minimum: 1, maximum: config.maxTopK, description: `Chunks to retrieve. Default ${config.defaultTopK}.` })),
      strategy: Type.Optional(Type.Unsafe<Strategy>({ type: 'string', enum: [...strategies], description: `How the context cache is built. Default ${config.defaultStrategy}.` })),
      maxTokens: Type.Optional(
        Type.Integer({ minimum: 1, maximum: config.maxGeneratedTokens, description: `Tokens to generate at most. Default ${config.defaultMaxTokens}.` }),
      ),
      temperature: Type.Optional(Type.Number({ minimum: 0, maximum: 2, description: 'Sampling temperature; 0 is greedy. Default 0.' })),
      seed: Type.Optional(Type.Integer({ minimum: 0, description: 'Sampling seed. Default 0.' })),
      stream: Type.Optional(Type.Boolean({ description: 'Answer as server-sent events. Default false.' })),
    },
    { additionalProperties: false },
  );
}

type QueryBody = Static<ReturnType<typeof querySchema>>;

/** `POST /v1/query`: answer a question as JSON or, with `stream`, as server-sent events. */
export function registerQueryRoutes(app: FastifyInstance, context: ServerContext): void {
  const { config } = context;
  app.post<{ Body: QueryBody }>('/v1/query', { schema: { body: querySchema(config) } }, async (request, reply) => {
    const body = request.body;
    if (body.question.trim() === '') {
      throw new KvpackError('INVALID_ARGUMENT', 'Invalid request body: question must contain a non-space character.', { fields: ['question'] });
    }
    if (body.question.length > config.maxQuestionChars) {
      throw new KvpackError(
        'QUESTION_TOO_LONG',
        `The question has ${body.question.length} characters; the limit is ${config.maxQuestionChars} (maxQuestionChars). Shorten the question.`,
        { characters: body.question.length, limit: config.maxQuestionChars },
      );
    }
    const slot = context.slots.acquire();
    const generation = context.generations.start();
    const onClose = () => {
      if (!reply.raw.writableFinished) generation.abort('client disconnected');
    };
    reply.raw.on('close', onClose);
    if (request.raw.socket.destroyed) {
      generation.abort('client disconnected');
    }
    const events = body.stream ? new EventStream(reply) : undefined;
    try {
      const result = await context.pipeline.answer(
        {
          question: body.question,
          topK: body.topK ?? config.defaultTopK,
          strategy: body.strategy ?? config.defaultStrategy,
          maxTokens: body.maxTokens ?? config.defaultMaxTokens,
          temperature: body.temperature,
          seed: body.seed,
        },
        { signal: generation.signal, onToken: events ? (text) => events.send('token', { text }) : undefined },
      );
      logOutcome(request, result, generation.reason);
      if (result.finishReason !== 'cancelled') context.metrics.recordQuery(result);
      if (!events) {
        return result;
      }
      events.send('done', result);
      events.end();
      return reply;
    } catch (error) {
      if (!events?.opened) throw error;
      sendStreamError(request, events, error, context);
      return reply;
    } finally {
      reply.raw.off('close', onClose);
      generation.finish();
      slot.release();
    }
  });
}

/** Sends an error as a final `error` event, because after the first event the status line is already sent. */
function sendStreamError(request: FastifyRequest, events: EventStream, error: unknown, context: ServerContext): void {
  const { error: catalogError, internal } = toCatalogError(error, context.config);
  if (internal) request.log.error({ err: error }, 'query failed mid-stream');
  else request.log.warn({ code: catalogError.code, message: catalogError.message }, 'query failed mid-stream');
  events.send('error', errorBody(catalogError));
  events.end();
}

function logOutcome(request: FastifyRequest, result: QueryResult, cancelReason: string | undefined): void {
  const details = {
    strategy: result.strategy,
    finishReason: result.finishReason,
    citations: result.citations.length,
    generatedTokens: result.tokens.generatedTokens,
    splicedTokens: result.tokens.splicedTokens,
    computedTokens: result.tokens.computedTokens,
    timeToFirstTokenMs: Math.round(result.timings.timeToFirstTokenMs),
    totalMs: Math.round(result.timings.totalMs),
  };
  if (result.finishReason === 'cancelled') request.log.info({ ...details, reason: cancelReason }, 'query cancelled');
  else request.log.info(details, 'query answered');
}
