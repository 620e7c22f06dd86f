import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, openSync, readdirSync, renameSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';

/**
 * Writes a file so that readers see either the old content or the complete new content: the bytes
 * go to a temporary sibling, are flushed to disk, and the temporary file is renamed over `file`.
 */
export function writeFileAtomic(file: string, data: Uint8Array | string): void {
  const temp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const fd = openSync(temp, 'w');
  try {
    const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    let written = 0;
    while (written < bytes.byteLength) {
      written += writeSync(fd, bytes, written, bytes.byteLength - written);
    }
    fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    rmSync(temp, { force: true });
    throw error;
  }
  closeSync(fd);
  renameSync(temp, file);
  fsyncDirectory(path.dirname(file));
}

export function writeJsonAtomic(file: string, value: unknown): void {
  writeFileAtomic(file, `${JSON.stringify(value, null, 2)}\n`);
}

/** Flushes a directory entry change (a rename) to disk; a no-op where directories cannot be opened. */
export function fsyncDirectory(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // Some file systems reject fsync on directories; the rename itself is still atomic there.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * Builds a folder under a temporary sibling name and renames it into place, so that `target`
 * either does not exist or is complete. An existing non-empty `target` is replaced only when
 * `overwrite` is set.
 */
export async function replaceFolderAtomic(
  target: string,
  build: (tempDir: string) => Promise<void> | void,
  options: { overwrite: boolean },
): Promise<void> {
  if (existsSync(target) && readdirSync(target).length > 0 && !options.overwrite) {
    throw new FolderExistsError(target);
  }
  const temp = `${target}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await build(temp);
    if (existsSync(target)) {
      const old = `${target}.old-${process.pid}-${randomBytes(4).toString('hex')}`;
      renameSync(target, old);
      renameSync(temp, target);
      rmSync(old, { recursive: true, force: true });
    } else {
      renameSync(temp, target);
    }
    fsyncDirectory(path.dirname(path.resolve(target)));
  } finally {
    rmSync(temp, { recursive: true, force: true });
  }
}

export class FolderExistsError extends Error {
  constructor(readonly folder: string) {
    super(`${folder} already exists and is not empty`);
  }
}
