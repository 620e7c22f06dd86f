import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { KvpackError } from '../common/errors.js';

/**
 * Returns an `onRequest` hook that rejects requests without `Authorization: Bearer <token>` for
 * the configured token, or undefined when no token is configured (the routes are open). Tokens
 * are compared through their sha256 digests in constant time.
 */
export function bearerTokenHook(token: string | undefined): ((request: FastifyRequest, reply: FastifyReply) => Promise<void>) | undefined {
  if (token === undefined) {
    return undefined;
  }
  const expected = digest(token);
  return async (request, reply) => {
    const header = request.headers.authorization;
    const match = typeof header === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    if (!match) {
      reply.header('www-authenticate', 'Bearer');
      throw new KvpackError('UNAUTHORIZED', 'This route requires an API token: send the header "Authorization: Bearer <token>".');
    }
    if (!timingSafeEqual(digest(match[1]), expected)) {
      reply.header('www-authenticate', 'Bearer error="invalid_token"');
      throw new KvpackError('UNAUTHORIZED', 'The bearer token is not the configured API token; check KVPACK_API_TOKEN on the server.');
    }
  };
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}
