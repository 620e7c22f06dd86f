import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../../../common/paths.js';
import { InferenceEngine } from '../../../inference/engine.js';
import { encodeSafetensors, decodeSafetensors } from '../../../packets/safetensors.js';
import { testModelDir } from '../../helpers/models.js';

const run = promisify(execFile);

async function kvpack(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ stdout: string; stderr: string }> {
  return run(process.execPath, ['--import', 'tsx', path.join(packageRoot, 'cli', 'main.ts'), ...args], {
    cwd: packageRoot,
    env,
    maxBuffer: 16 * 1024 * 1024,
  });
}

/** Writes a one-vector conditioned adapter recorded for a model whose fingerprint is all `f`. */
function writeForeignAdapter(file: string): void {
  const header = { shape: [1, 64], data: new Float32Array(64) };
  const metadata = { format: 'kvpack-adapter', format_version: '1', id: 'foreign', variant: 'conditioned', model_fingerprint: 'f'.repeat(64), hidden_size: '64', training_data: '', created_at: '' };
  writeFileSync(file, encodeSafetensors(new Map([['header', header]]), metadata));
}

describe('kvpack adapter commands', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'kvpack-adapter-cli-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('help names units and defaults', async () => {
    const { stdout } = await kvpack(['adapter', 'train', '--help']);
    expect(stdout).toContain('--steps <n>');
    expect(stdout).toContain('(default: 340)');
    expect(stdout).toContain('peak AdamW learning rate');
  });

  it('train, eval and import a tiny adapter', async () => {
    const model = testModelDir('stories260K');
    const out = path.join(dir, 'tiny.safetensors');
    const small = ['--test-samples', '3', '--chunks', '2'];
    const trained = await kvpack([
      'adapter', 'train', '--model', model, '--variant', 'conditioned', '--header', '2', '--steps', '2', '--batch', '2',
      '--train-samples', '4', '--validation-samples', '3', '--eval-every', '1', ...small, '--out', out,
    ]);
    expect(trained.stdout).toContain(`Wrote ${out}: conditioned adapter tiny, 2+0 vectors, 2 steps`);
    expect(trained.stdout).toMatch(/Gate \((default|rejected)\): /);
    const stored = decodeSafetensors(readFileSync(out), out);
    expect(stored.tensors.get('header')?.shape).toEqual([2, 64]);
    expect(JSON.parse(stored.metadata.training).steps).toBe(2);
    expect(JSON.parse(stored.metadata.loss_curve).points).toHaveLength(2);
    expect(JSON.parse(stored.metadata.fidelity).byChunkCount[0].chunks).toBe(2);

    const evaluated = await kvpack(['adapter', 'eval', '--model', model, '--adapter', out, '--samples', '3', '--chunks', '2']);
    expect(evaluated.stdout).toContain('| chunks | strategy |');
    expect(evaluated.stdout).toMatch(/\| 2 \| naive \| 3 \|/);
    expect(evaluated.stdout).toMatch(/\| 2 \| epic-4 \| 3 \|/);
    expect(evaluated.stdout).toMatch(/\| 2 \| conditioned \(2\+0\) \| 3 \|/);

    const bare = path.join(dir, 'bare.safetensors');
    writeFileSync(bare, encodeSafetensors(new Map([['header', stored.tensors.get('header') as { shape: number[]; data: Float32Array }]]), {}));
    const imported = path.join(dir, 'imported.safetensors');
    const result = await kvpack(['adapter', 'import', '--model', model, '--from', bare, '--variant', 'conditioned', ...small, '--out', imported]);
    expect(result.stdout).toContain(`Wrote ${imported}: imported conditioned adapter imported.`);
    const importedMeta = decodeSafetensors(readFileSync(imported), imported).metadata;
    expect(importedMeta.training_data).toContain('bare.safetensors');
    expect(JSON.parse(importedMeta.fidelity).adapterMeanKl).toBeCloseTo(JSON.parse(stored.metadata.fidelity).adapterMeanKl, 6);
  });

  it('trains a conditioned-kv header, with or without a conditioned start', async () => {
    const model = testModelDir('stories260K');
    const tiny = ['--header', '2', '--steps', '2', '--batch', '2', '--train-samples', '4', '--validation-samples', '3', '--eval-every', '1'];
    const small = ['--test-samples', '3', '--chunks', '2'];
    const start = path.join(dir, 'start.safetensors');
    await kvpack(['adapter', 'train', '--model', model, '--variant', 'conditioned', ...tiny, ...small, '--out', start]);

    const fromFile = path.join(dir, 'from-file.safetensors');
    // The header length comes from the starting file and overrides --header.
    const warm = await kvpack(['adapter', 'train', '--model', model, '--variant', 'conditioned-kv', '--init-from', start, ...tiny, '--header', '3', ...small, '--out', fromFile]);
    expect(warm.stdout).toContain(`Using the 2 header vectors of ${start}, so --header 3 does not apply.`);
    expect(warm.stdout).toContain(`Wrote ${fromFile}: conditioned-kv adapter from-file, 2 header entries per layer and a first-slot header, 2 steps`);
    const stored = decodeSafetensors(readFileSync(fromFile), fromFile);
    // stories260K: 5 layers, 4 KV heads of 8 dimensions.
    expect(stored.tensors.get('header_keys')?.shape).toEqual([5, 4, 2, 8]);
    expect(stored.tensors.get('header_values')?.shape).toEqual([5, 4, 2, 8]);
    expect(stored.tensors.has('header')).toBe(false);
    expect(stored.tensors.get('first_header_keys')?.shape).toEqual([5, 4, 2, 8]);
    expect(JSON.parse(stored.metadata.training).init).toBe('cache of given header vectors');

    // Without --init-from a conditioned header is trained first, so the steps of both stages count.
    const twoStage = path.join(dir, 'two-stage.safetensors');
    const cold = await kvpack(['adapter', 'train', '--model', model, '--variant', 'conditioned-kv', '--no-first-slot', ...tiny, ...small, '--out', twoStage]);
    expect(cold.stdout).toContain(`Wrote ${twoStage}: conditioned-kv adapter two-stage, 2 header entries per layer, 4 steps`);
    const single = decodeSafetensors(readFileSync(twoStage), twoStage);
    expect(JSON.parse(single.metadata.training).init).toBe('cache of a conditioned header trained first (bos init)');
    expect(single.tensors.has('first_header_keys')).toBe(false);

    // Import keeps the first-slot header of a bare file.
    const imported = path.join(dir, 'imported-kv.safetensors');
    await kvpack(['adapter', 'import', '--model', model, '--from', fromFile, '--variant', 'conditioned-kv', ...small, '--out', imported]);
    const importedTensors = decodeSafetensors(readFileSync(imported), imported).tensors;
    expect(importedTensors.get('first_header_keys')?.data).toEqual(stored.tensors.get('first_header_keys')?.data);
    expect(importedTensors.get('header_values')?.data).toEqual(stored.tensors.get('header_values')?.data);

    const evaluated = await kvpack(['adapter', 'eval', '--model', model, '--adapter', fromFile, '--samples', '3', '--chunks', '2']);
    expect(evaluated.stdout).toMatch(/\| 2 \| conditioned-kv \(2 per layer, first-slot header\) \| 3 \|/);

    const wrong = await kvpack(['adapter', 'train', '--model', model, '--variant', 'conditioned', '--init-from', start, ...tiny, '--out', path.join(dir, 'x.safetensors')]).then(
      () => undefined,
      (error: { stderr: string; code: number }) => error,
    );
    expect(wrong?.code).toBe(1);
    expect(wrong?.stderr).toContain('--init-from applies to --variant conditioned-kv only, got --variant conditioned.');
  });

  it('eval rejects an adapter of another model', async () => {
    const out = path.join(dir, 'foreign.safetensors');
    writeForeignAdapter(out);
    const failure = await kvpack(['adapter', 'eval', '--model', testModelDir('stories260K'), '--adapter', out]).then(
      () => undefined,
      (error: { stderr: string; code: number }) => error,
    );
    expect(failure?.code).toBe(1);
    expect(failure?.stderr).toContain('was trained for model ffff');
    expect(failure?.stderr).toContain('[ADAPTER_MISMATCH]');
  });

  it('eval takes the model from KVPACK_MODEL', async () => {
    const { stdout } = await kvpack(['adapter', 'eval', '--help']);
    expect(stdout).toContain('(default: $KVPACK_MODEL, else stories260K');

    const model = testModelDir('stories260K');
    const engine = await InferenceEngine.load(model);
    const fingerprint = engine.modelFingerprint;
    await engine.release();
    const out = path.join(dir, 'foreign-default-model.safetensors');
    writeForeignAdapter(out);
    // Without --model the command loads the model that KVPACK_MODEL names, which the mismatch message reports.
    const failure = await kvpack(['adapter', 'eval', '--adapter', out], { ...process.env, KVPACK_MODEL: model }).then(
      () => undefined,
      (error: { stderr: string; code: number }) => error,
    );
    expect(failure?.code).toBe(1);
    expect(failure?.stderr).toContain(`but the loaded model is ${fingerprint}`);
  });
});
