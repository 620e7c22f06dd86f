import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { importLlama2c, initRandomModel } from '../../inference/model-builders.js';
import { architecturePresets } from '../../inference/presets.js';
import { stories260kFiles } from '../helpers/shared.js';

declare module 'vitest' {
  export interface ProvidedContext {
    modelsDir: string;
  }
}

/** Builds the model folders the model suites share, once per run, in a temporary folder. */
export default async function setup(project: TestProject): Promise<() => void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'kvpack-test-models-'));
  const { checkpoint, tokenizer } = stories260kFiles();
  await importLlama2c(checkpoint, tokenizer, path.join(dir, 'stories260K'));
  await initRandomModel(architecturePresets['llama-tiny'], 7, path.join(dir, 'llama-tiny'));
  await initRandomModel(architecturePresets['qwen2-small'], 11, path.join(dir, 'qwen2-small'));
  project.provide('modelsDir', dir);
  return () => rmSync(dir, { recursive: true, force: true });
}
