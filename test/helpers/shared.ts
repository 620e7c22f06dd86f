import path from 'node:path';
import { findSharedDir } from '../../common/paths.js';

/**
 * Returns the shared assets folder. Model-dependent suites need it; a missing folder fails the
 * suite with this message instead of skipping it.
 */
export function requireSharedDir(): string {
  const dir = findSharedDir();
  if (!dir) {
    throw new Error(
      'Shared assets folder not found: set KVPACK_SHARED_DIR to the folder that contains ' +
        'models/stories260K and data/, or place it at ../shared beside the repository.',
    );
  }
  return dir;
}

export function stories260kFiles(): { checkpoint: string; tokenizer: string } {
  const dir = path.join(requireSharedDir(), 'models', 'stories260K');
  return { checkpoint: path.join(dir, 'stories260K.bin'), tokenizer: path.join(dir, 'tok512.bin') };
}
