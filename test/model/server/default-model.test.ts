import { copyFileSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { resolveDefaultModel, stories260kFiles } from '../../../inference/default-model.js';
import { InferenceEngine } from '../../../inference/engine.js';
import { generateFromPrompt } from '../../../inference/generate.js';
import { stories260kFiles as sharedStoriesFiles } from '../../helpers/shared.js';

const dir = mkdtempSync(path.join(tmpdir(), 'kvpack-default-model-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('resolveDefaultModel', () => {
  it('converts stories260K from a local folder into the cache', async () => {
    const source = path.join(dir, 'source');
    mkdirSync(source);
    const shared = sharedStoriesFiles();
    copyFileSync(shared.checkpoint, path.join(source, stories260kFiles.checkpoint.name));
    copyFileSync(shared.tokenizer, path.join(source, stories260kFiles.tokenizer.name));
    const cache = path.join(dir, 'cache');
    const logged: string[] = [];

    const modelDir = await resolveDefaultModel({ cacheDir: cache, sourceDir: source, log: (line) => logged.push(line) });
    expect(modelDir).toBe(path.join(cache, 'models', 'stories260K'));
    expect(logged).toEqual([`Converting stories260K into ${modelDir}`]);

    const engine = await InferenceEngine.load(modelDir);
    try {
      const result = await generateFromPrompt(engine, '', { maxTokens: 12 });
      expect(result.text.startsWith('Once upon a time, there was a little girl')).toBe(true);
    } finally {
      await engine.release();
    }
  });

  it('reuses the converted folder without reading the source', async () => {
    const cache = path.join(dir, 'cache');
    const config = path.join(cache, 'models', 'stories260K', 'config.json');
    const before = statSync(config).mtimeMs;
    const logged: string[] = [];
    const modelDir = await resolveDefaultModel({ cacheDir: cache, sourceDir: path.join(dir, 'no-such-folder'), log: (line) => logged.push(line) });
    expect(modelDir).toBe(path.join(cache, 'models', 'stories260K'));
    expect(logged).toEqual([]);
    expect(statSync(config).mtimeMs).toBe(before);
  });
});
