import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { cacheDir, findSharedDir } from '../common/paths.js';
import { importLlama2c, initRandomModel } from '../inference/model-builders.js';
import { architecturePresets } from '../inference/presets.js';

export type BenchModel = 'stories260K' | 'llama-100m' | 'llama-350m' | 'qwen2-small';

/**
 * Returns the model folder of a benchmark model, built on first use into the cache folder. Random-weight
 * folders are named after their preset's shape, so a changed preset builds a new folder.
 */
export async function benchModelDir(name: BenchModel): Promise<string> {
  const dir = path.join(cacheDir(), 'bench-models', name === 'stories260K' ? name : `${name}-${shapeDigest(name)}`);
  if (existsSync(path.join(dir, 'onnx', 'model.onnx'))) {
    return dir;
  }
  if (name === 'stories260K') {
    const shared = findSharedDir();
    if (!shared) {
      throw new Error('stories260K needs the shared assets folder: set KVPACK_SHARED_DIR or place it at ../shared.');
    }
    const source = path.join(shared, 'models', 'stories260K');
    await importLlama2c(path.join(source, 'stories260K.bin'), path.join(source, 'tok512.bin'), dir);
  } else {
    await initRandomModel(architecturePresets[name], 0, dir);
  }
  return dir;
}

function shapeDigest(name: string): string {
  return createHash('sha256').update(JSON.stringify(architecturePresets[name])).digest('hex').slice(0, 8);
}

/** One line describing the machine, printed above every benchmark table. */
export function machineSummary(): string {
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  const memory = (os.totalmem() / 2 ** 30).toFixed(0);
  return `${cpu}, ${os.cpus().length} cores, ${memory} GiB, Node ${process.version}, onnxruntime-node ${ort.env.versions.node}`;
}
