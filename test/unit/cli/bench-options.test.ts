import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { packageRoot } from '../../../common/paths.js';

const run = promisify(execFile);

/** Runs the kvpack CLI and returns its exit code and stderr; these options fail before any model loads. */
async function kvpack(args: string[]): Promise<{ code: number; stderr: string }> {
  try {
    const { stderr } = await run(process.execPath, ['--import', 'tsx', path.join(packageRoot, 'cli', 'main.ts'), ...args], { cwd: packageRoot });
    return { code: 0, stderr };
  } catch (error) {
    const failed = error as { code: number; stderr: string };
    return { code: failed.code, stderr: failed.stderr };
  }
}

describe('kvpack bench options', () => {
  it('rejects an unknown suite model', async () => {
    const result = await kvpack(['bench', '--models', 'stories260K,gpt2']);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain('unknown model "gpt2"; expected a comma-separated list of stories260K, llama-100m, llama-350m.');
  });

  it('rejects an empty model list', async () => {
    const result = await kvpack(['bench', '--models', ',']);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain('expected at least one model.');
  });

  it('rejects zero repetitions', async () => {
    const result = await kvpack(['bench', '--repetitions', '0']);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain("option '--repetitions <n>' argument '0' is invalid");
  });

  it('rejects an unknown store strategy', async () => {
    const result = await kvpack(['bench', 'store', '--store', 'unused', '--questions', 'unused', '--strategies', 'full,fast']);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain('unknown strategy "fast"; expected a comma-separated list of full, prefix, naive, epic, packet.');
  });
});
