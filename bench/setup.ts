import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { cacheDir, findSharedDir } from '../common/paths.js';
import { importLlama2c, initRandomModel } from '../inference/model-builders.js';
import { architecturePresets } from '../inference/presets.js';

/** Model folders the benchmarks use, built once into the cache folder. */
export async function benchModelDir(name: 'stories260K' | 'llama-100m' | 'qwen2-small'): Promise<string> {
  const dir = path.join(cacheDir(), 'bench-models', name);
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

/** One line describing the machine, printed above every benchmark table. */
export function machineSummary(): string {
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  const memory = (os.totalmem() / 2 ** 30).toFixed(0);
  return `${cpu}, ${os.cpus().length} cores, ${memory} GiB, Node ${process.version}, onnxruntime-node ${ort.env.versions.node}`;
}
