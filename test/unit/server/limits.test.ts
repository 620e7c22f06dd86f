import { describe, expect, it } from 'vitest';
import { isKvpackError } from '../../../common/errors.js';
import { InFlightGenerations } from '../../../server/generations.js';
import { GenerationSlots } from '../../../server/limits.js';
import { WriteLock } from '../../../server/write-lock.js';

describe('GenerationSlots', () => {
  it('raises TOO_MANY_REQUESTS when full', () => {
    const slots = new GenerationSlots(2, 3);
    slots.acquire();
    slots.acquire();
    let caught: unknown;
    try {
      slots.acquire();
    } catch (error) {
      caught = error;
    }
    expect(isKvpackError(caught, 'TOO_MANY_REQUESTS')).toBe(true);
    expect((caught as Error).message).toBe('All 2 generation slots are busy (maxConcurrentGenerations); retry after 3 s.');
    expect((caught as { details: Record<string, unknown> }).details.retryAfterSeconds).toBe(3);
  });

  it('frees a slot once per release', () => {
    const slots = new GenerationSlots(1, 1);
    const slot = slots.acquire();
    expect(slots.inUse).toBe(1);
    slot.release();
    slot.release();
    expect(slots.inUse).toBe(0);
    slots.acquire();
    expect(slots.inUse).toBe(1);
  });
});

describe('WriteLock', () => {
  it('runs tasks one at a time in call order', async () => {
    const lock = new WriteLock();
    const events: string[] = [];
    const task = (name: string, ms: number) => async () => {
      events.push(`start ${name}`);
      await new Promise((resolve) => setTimeout(resolve, ms));
      events.push(`end ${name}`);
      return name;
    };
    const results = await Promise.all([lock.run(task('a', 20)), lock.run(task('b', 1)), lock.run(task('c', 5))]);
    expect(results).toEqual(['a', 'b', 'c']);
    expect(events).toEqual(['start a', 'end a', 'start b', 'end b', 'start c', 'end c']);
  });

  it('keeps running after a failed task', async () => {
    const lock = new WriteLock();
    const failed = lock.run(() => {
      throw new Error('boom');
    });
    await expect(failed).rejects.toThrow('boom');
    await expect(lock.run(() => 'next')).resolves.toBe('next');
  });

  it('idle waits for queued tasks', async () => {
    const lock = new WriteLock();
    let done = false;
    void lock.run(async () => {
      await new Promise((resolve) => setTimeout(resolve, 10));
      done = true;
    });
    await lock.idle();
    expect(done).toBe(true);
  });
});

describe('InFlightGenerations', () => {
  it('aborts every running generation', () => {
    const generations = new InFlightGenerations();
    const first = generations.start();
    const second = generations.start();
    second.finish();
    expect(generations.abortAll('shutdown')).toBe(1);
    expect(first.signal.aborted).toBe(true);
    expect(first.reason).toBe('shutdown');
    expect(second.signal.aborted).toBe(false);
  });

  it('keeps the first abort reason', () => {
    const generations = new InFlightGenerations();
    const generation = generations.start();
    generation.abort('client disconnected');
    generations.abortAll('shutdown');
    expect(generation.reason).toBe('client disconnected');
  });
});
