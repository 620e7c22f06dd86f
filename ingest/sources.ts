import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { KvpackError } from '../common/errors.js';

/** The file kinds ingestion reads. */
export type SourceKind = 'text' | 'markdown' | 'html' | 'jsonl';

export interface SourceFile {
  /** Absolute path. */
  path: string;
  kind: SourceKind;
}

export interface DiscoveredSources {
  /** Files to read, sorted by path. */
  files: SourceFile[];
  /** Files of other kinds, which ingestion skips with a warning. */
  skipped: string[];
}

const kindByExtension: Readonly<Record<string, SourceKind>> = {
  '.txt': 'text',
  '.text': 'text',
  '.md': 'markdown',
  '.markdown': 'markdown',
  '.html': 'html',
  '.htm': 'html',
  '.jsonl': 'jsonl',
  '.ndjson': 'jsonl',
};

/** The file extensions ingestion reads, for help text and warnings. */
export const supportedExtensions: readonly string[] = Object.keys(kindByExtension);

export function sourceKindOf(file: string): SourceKind | undefined {
  return kindByExtension[path.extname(file).toLowerCase()];
}

/**
 * Lists the files under the given files and folders (folders recursively, symbolic links
 * followed for files only). Raises SOURCE_NOT_FOUND for a path that does not exist.
 */
export function discoverSources(paths: readonly string[]): DiscoveredSources {
  const files = new Map<string, SourceFile>();
  const skipped = new Set<string>();
  const visit = (file: string) => {
    const kind = sourceKindOf(file);
    if (kind) files.set(file, { path: file, kind });
    else skipped.add(file);
  };
  for (const given of paths) {
    const resolved = path.resolve(given);
    const stats = statOrUndefined(resolved);
    if (!stats) {
      throw new KvpackError('SOURCE_NOT_FOUND', `Cannot ingest ${given}: no such file or folder. Check the path.`, { path: resolved });
    }
    if (stats.isDirectory()) {
      walkFolder(resolved, visit);
    } else {
      visit(resolved);
    }
  }
  return {
    files: [...files.values()].sort((a, b) => compareCodeUnits(a.path, b.path)),
    skipped: [...skipped].sort(compareCodeUnits),
  };
}

/** Orders strings by UTF-16 code units, the same on every locale. */
function compareCodeUnits(a: string, b: string): number {
  if (a < b) return -1;
  if (a > b) return 1;
  return 0;
}

function walkFolder(dir: string, visit: (file: string) => void): void {
  const entries = readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1));
  for (const entry of entries) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      walkFolder(full, visit);
    } else if (entry.isFile() || (entry.isSymbolicLink() && statOrUndefined(full)?.isFile())) {
      visit(full);
    }
  }
}

function statOrUndefined(file: string) {
  try {
    return statSync(file);
  } catch {
    return undefined;
  }
}
