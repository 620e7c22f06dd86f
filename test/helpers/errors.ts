import { expect } from 'vitest';
import { isKvpackError, KvpackError, type ErrorCode } from '../../common/errors.js';

/** Awaits a promise that must reject with a KvpackError and returns that error; anything else fails the test. */
export async function rejection(promise: Promise<unknown>): Promise<KvpackError> {
  try {
    await promise;
  } catch (error) {
    if (isKvpackError(error)) return error;
    throw error;
  }
  throw new Error('expected a KvpackError, but the promise resolved');
}

/** Asserts that a promise rejects with a KvpackError of this code whose message matches. */
export async function expectKvpackError(promise: Promise<unknown>, code: ErrorCode, message: RegExp): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(KvpackError);
  expect((error as KvpackError).code).toBe(code);
  expect((error as KvpackError).message).toMatch(message);
}
