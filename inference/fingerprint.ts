import { createHash } from 'node:crypto';
import { createReadStream, mkdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { writeJsonAtomic } from '../common/fs-atomic.js';
import { cacheDir } from '../common/paths.js';
import { decodeModel } from './onnx/proto.js';

/**
 * Computes the model fingerprint: sha256 over config.json, the ONNX graph file and every external
 * weight file it references. Packets record it, so a packet is never spliced into another model.
 * Hashing a multi-gigabyte export takes a while, so results are remembered in the cache folder by
 * path, size and modification time of each file.
 */
export async function modelFingerprint(dir: string, onnxPath: string): Promise<string> {
  const files = [path.join(dir, 'config.json'), onnxPath, ...externalWeightFiles(onnxPath)];
  const key = files.map((file) => fileIdentity(file)).join('|');
  const memo = readMemo();
  const known = memo[key];
  if (known) {
    return known;
  }
  const hash = createHash('sha256');
  for (const file of files) {
    hash.update(`${path.basename(file)}\0`);
    await hashFileInto(hash, file);
  }
  const digest = hash.digest('hex');
  rememberFingerprint(key, digest);
  return digest;
}

function externalWeightFiles(onnxPath: string): string[] {
  // NOTE: a graph file over 256 MiB is taken to hold its weights inline and is not decoded to
  // look for external weight files; exports that use external data keep the graph file small.
  if (statSync(onnxPath).size > 256 * 1024 * 1024) {
    return [];
  }
  const dir = path.dirname(onnxPath);
  const found = new Set<string>();
  for (const tensor of decodeModel(readFileSync(onnxPath)).graph.initializer) {
    const location = tensor.externalData?.find((entry) => entry.key === 'location')?.value;
    if (location) found.add(path.resolve(dir, location));
  }
  return [...found];
}

function fileIdentity(file: string): string {
  const stats = statSync(file);
  return `${path.resolve(file)}:${stats.size}:${stats.mtimeMs}`;
}

async function hashFileInto(hash: ReturnType<typeof createHash>, file: string): Promise<void> {
  for await (const chunk of createReadStream(file, { highWaterMark: 4 * 1024 * 1024 })) {
    hash.update(chunk as Buffer);
  }
}

const memoFile = () => path.join(cacheDir(), 'fingerprints.json');

function readMemo(): Record<string, string> {
  try {
    return JSON.parse(readFileSync(memoFile(), 'utf8')) as Record<string, string>;
  } catch {
    return {};
  }
}

function rememberFingerprint(key: string, digest: string): void {
  try {
    const memo = readMemo();
    memo[key] = digest;
    const entries = Object.entries(memo).slice(-256);
    mkdirSync(cacheDir(), { recursive: true });
    writeJsonAtomic(memoFile(), Object.fromEntries(entries));
  } catch {
    // A read-only cache folder only costs a recomputation next time.
  }
}
