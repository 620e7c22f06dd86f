import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import path from 'node:path';

// Temporary files of this process that are still being written, so that a cleanup of crash
// leftovers never removes one (a restarted container often reuses the pid of the crashed run).
const tempFilesInFlight = new Set<string>();

export function isTempFileInFlight(file: string): boolean {
  return tempFilesInFlight.has(file);
}

/**
 * Writes a file so that readers see either the old content or the complete new content, without
 * blocking the event loop. The bytes go to `<file>.tmp-<pid>-<random hex>` in the same folder and
 * are flushed with fsync. The temporary file is then renamed over `file`, and the folder is flushed
 * so the rename survives a power loss. Missing parent folders are created (and flushed) first.
 */
export async function writeFileAtomically(file: string, data: Uint8Array): Promise<void> {
  await makeFolderDurably(path.dirname(file));
  const temp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  tempFilesInFlight.add(temp);
  try {
    const handle = await open(temp, 'w');
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, file);
    await fsyncFolder(path.dirname(file));
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  } finally {
    tempFilesInFlight.delete(temp);
  }
}

/** Creates a folder and its missing parents, flushing each parent whose entries changed. */
async function makeFolderDurably(folder: string): Promise<void> {
  const target = path.resolve(folder);
  const firstCreated = await mkdir(target, { recursive: true });
  if (firstCreated === undefined) {
    return;
  }
  let current = target;
  while (current.length >= firstCreated.length) {
    await fsyncFolder(path.dirname(current));
    current = path.dirname(current);
  }
}

/** Flushes a folder's entries (a rename, a new file) to disk; a no-op where folders cannot be opened. */
export async function fsyncFolder(folder: string): Promise<void> {
  let handle;
  try {
    handle = await open(folder, 'r');
    await handle.sync();
  } catch {
    // Some file systems reject fsync on folders; the rename itself is still atomic there.
  } finally {
    await handle?.close();
  }
}
