import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import lockfile from 'proper-lockfile';
import { KvpackError } from '../common/errors.js';

/** The lock folder that proper-lockfile creates inside the store. */
export const LOCK_NAME = 'ingest.lock';
/**
 * The file naming the lock holder, beside the lock folder. A file inside the folder would change
 * the folder's mtime, which proper-lockfile takes for another process's refresh.
 */
export const LOCK_OWNER_NAME = 'ingest.lock.owner.json';

export interface StoreLockOptions {
  /**
   * Milliseconds after the holder's last refresh from which a lock counts as stale and may be
   * taken over (proper-lockfile `stale`, minimum 5000; the holder refreshes every half of it).
   * Default 120000, so that long synchronous steps of an ingestion do not lose the lock.
   */
  staleMs?: number;
  /** Called when the lock is lost while held (its folder removed or not refreshed in time). */
  onCompromised?: (error: Error) => void;
}

/** The holder of a lock, as written to the owner file. */
export interface LockOwner {
  pid: number;
  hostname: string;
  /** ISO 8601 time the lock was taken. */
  acquiredAt: string;
  /** The holder's task, such as "kvpack ingest". */
  purpose: string;
}

export interface StoreLock {
  readonly owner: LockOwner;
  release(): Promise<void>;
}

/**
 * Takes the store's write lock (proper-lockfile on `<store>/ingest.lock`) or raises STORE_LOCKED
 * naming the holder. A lock left by a process that died on this host is taken over at once. A lock
 * from another host is taken over once it is stale (not refreshed for `staleMs`).
 */
export async function acquireStoreLock(storeDir: string, purpose: string, options: StoreLockOptions = {}): Promise<StoreLock> {
  const lockPath = path.join(storeDir, LOCK_NAME);
  const owner: LockOwner = { pid: process.pid, hostname: hostname(), acquiredAt: new Date().toISOString(), purpose };
  const lockOptions = {
    lockfilePath: lockPath,
    realpath: false,
    stale: Math.max(5000, options.staleMs ?? 120_000),
    retries: 0,
    onCompromised: options.onCompromised ?? ((error: Error) => {
      throw error;
    }),
  };
  let release: () => Promise<void>;
  try {
    release = await lockfile.lock(storeDir, lockOptions);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ELOCKED') throw error;
    const holder = readOwner(storeDir);
    if (!holder || !isDeadLocalProcess(holder)) {
      throw lockedError(storeDir, holder);
    }
    // The holder died without releasing: remove its lock folder and take the lock once.
    rmSync(lockPath, { recursive: true, force: true });
    try {
      release = await lockfile.lock(storeDir, lockOptions);
    } catch (retryError) {
      if ((retryError as NodeJS.ErrnoException).code === 'ELOCKED') throw lockedError(storeDir, readOwner(storeDir));
      throw retryError;
    }
  }
  const ownerFile = path.join(storeDir, LOCK_OWNER_NAME);
  writeFileSync(ownerFile, JSON.stringify(owner));
  return {
    owner,
    release: async () => {
      rmSync(ownerFile, { force: true });
      await release();
    },
  };
}

/** Reads who holds (or last held) the lock of a store, or undefined when no owner file exists. */
export function readOwner(storeDir: string): LockOwner | undefined {
  const file = path.join(storeDir, LOCK_OWNER_NAME);
  if (!existsSync(file)) return undefined;
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as LockOwner;
  } catch {
    return undefined;
  }
}

function isDeadLocalProcess(owner: LockOwner): boolean {
  if (owner.hostname !== hostname() || owner.pid === process.pid) return false;
  try {
    process.kill(owner.pid, 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

function lockedError(storeDir: string, owner: LockOwner | undefined): KvpackError {
  const holder = owner ? `${owner.purpose} (process ${owner.pid} on ${owner.hostname}, since ${owner.acquiredAt})` : 'another process';
  // A server holds its store for its whole life, so waiting for it does not help.
  const advice =
    owner?.purpose === 'kvpack serve'
      ? 'Ingest through the server (POST /v1/documents) or stop the server first'
      : 'Wait for it to finish';
  return new KvpackError(
    'STORE_LOCKED',
    `The store ${storeDir} is locked by ${holder}. ${advice}; a lock left by a process that died is taken over once it is stale.`,
    { storeDir, owner },
  );
}
