import { PassThrough } from 'node:stream';
import type { FastifyReply } from 'fastify';

/**
 * A server-sent events response (`text/event-stream`). The status line and headers go out with
 * the first event, so an error raised before any event can still be sent as a JSON error with its
 * own status. Events written after the client went away are dropped.
 */
export class EventStream {
  readonly #reply: FastifyReply;
  readonly #body = new PassThrough();
  #opened = false;

  constructor(reply: FastifyReply) {
    this.#reply = reply;
  }

  /** True once the headers and at least one event were handed to fastify. */
  get opened(): boolean {
    return this.#opened;
  }

  /** Writes one event: `event: NAME` and `data:` with `data` as one line of JSON. */
  send(event: string, data: unknown): void {
    if (!this.#opened) {
      this.#opened = true;
      this.#reply
        .code(200)
        .header('content-type', 'text/event-stream; charset=utf-8')
        .header('cache-control', 'no-cache')
        .header('x-accel-buffering', 'no')
        .send(this.#body);
    }
    if (this.#body.destroyed || this.#body.writableEnded) {
      return;
    }
    this.#body.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  }

  end(): void {
    if (!this.#body.destroyed && !this.#body.writableEnded) {
      this.#body.end();
    }
  }
}
