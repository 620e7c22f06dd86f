import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository (or installed package) root: the folder that contains package.json. */
export const packageRoot: string = findPackageRoot(path.dirname(fileURLToPath(import.meta.url)));

function findPackageRoot(start: string): string {
  let dir = start;
  while (!existsSync(path.join(dir, 'package.json'))) {
    const parent = path.dirname(dir);
    if (parent === dir) {
      throw new Error(`package.json not found above ${start}`);
    }
    dir = parent;
  }
  return dir;
}

/**
 * The folder of shared assets (pretrained models, evaluation data): `KVPACK_SHARED_DIR` when set,
 * otherwise `../shared` beside the package root. Returns undefined when neither exists.
 */
export function findSharedDir(): string | undefined {
  const fromEnv = process.env.KVPACK_SHARED_DIR;
  if (fromEnv) {
    return existsSync(fromEnv) ? path.resolve(fromEnv) : undefined;
  }
  const sibling = path.resolve(packageRoot, '..', 'shared');
  return existsSync(sibling) ? sibling : undefined;
}

/**
 * The cache folder for derived artifacts (converted models, patched graphs): `KVPACK_CACHE_DIR`,
 * else `$XDG_CACHE_HOME/kvpack`, else `~/.cache/kvpack`.
 */
export function cacheDir(): string {
  if (process.env.KVPACK_CACHE_DIR) {
    return path.resolve(process.env.KVPACK_CACHE_DIR);
  }
  const base = process.env.XDG_CACHE_HOME ?? path.join(homedir(), '.cache');
  return path.join(base, 'kvpack');
}
