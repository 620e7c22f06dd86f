import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shellQuote } from '../../../cli/commands/demo.js';
import { hotpotDocumentId } from '../../../cli/demo-corpus.js';
import { packageRoot } from '../../../common/paths.js';
import type { QueryResult } from '../../../query/types.js';
import { requireSharedDir } from '../../helpers/shared.js';
import { hotpotCorpus } from './helpers.js';

let cache: string;

beforeAll(() => {
  cache = mkdtempSync(path.join(tmpdir(), 'kvpack-cli-cache-'));
});

afterAll(() => {
  rmSync(cache, { recursive: true, force: true });
});

/** Environment of a `kvpack` child process: a fresh cache folder and the shared assets. */
function cliEnv(): NodeJS.ProcessEnv {
  return { ...process.env, KVPACK_CACHE_DIR: cache, KVPACK_SHARED_DIR: requireSharedDir(), KVPACK_CONFIG: undefined };
}

function runCli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, ['--import', 'tsx', 'cli/main.ts', ...args], { cwd: packageRoot, env: cliEnv(), encoding: 'utf8', timeout: 120_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe('--help', () => {
  it.each([
    ['serve', ['--store <dir>', '--model <dir>', '--port <n>', '--host <addr>', '--config <file>', '--adapter <file>']],
    ['ask', ['<question>', '--store <dir>', '--json', '--strategy <name>', '--top-k <n>', '--max-tokens <n>']],
    ['demo', ['--port <n>', '--host <addr>', '--questions <n>']],
  ])('documents the options of %s', (command, options) => {
    const { status, stdout } = runCli([command, '--help']);
    expect(status).toBe(0);
    expect(stdout).toContain(`Usage: kvpack ${command}`);
    for (const option of options) expect(stdout, option).toContain(option);
  });
});

describe('kvpack demo and kvpack ask', () => {
  const demoStore = () => path.join(cache, 'demo', 'hotpotqa-stories260K');

  it('demo converts the model, ingests the corpus and prints a working curl command', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'cli/main.ts', 'demo', '--questions', '2', '--port', '0'], {
      cwd: packageRoot,
      env: cliEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      const deadline = Date.now() + 120_000;
      while (!stdout.includes('Stop with Ctrl-C.') && Date.now() < deadline && child.exitCode === null) {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect(stdout, stderr).toContain('Stop with Ctrl-C.');
      expect(stderr).toContain(`Converting stories260K into ${path.join(cache, 'models', 'stories260K')}`);
      expect(stderr).toContain('Corpus: 20 documents ingested, 0 already in the store.');

      const match = /curl -s (\S+) -H 'content-type: application\/json' -d ('.*')$/m.exec(stdout);
      expect(match, stdout).not.toBeNull();
      const [, url, quotedBody] = match!;
      const body = JSON.parse(quotedBody.slice(1, -1).replace(/'\\''/g, "'")) as { question: string };
      const { questions } = hotpotCorpus(1);
      expect(body.question).toBe(questions[0].question_text);

      const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      expect(response.status).toBe(200);
      const result = (await response.json()) as QueryResult;
      expect(result.citations.length).toBeGreaterThan(0);
      const supporting = questions[0].contexts.flatMap((context, index) => (context.is_supporting ? [hotpotDocumentId(questions[0], index)] : []));
      expect(result.citations.some((citation) => supporting.includes(citation.documentId))).toBe(true);

      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });

  it('ask answers from the demo store as JSON', () => {
    const { questions } = hotpotCorpus(2);
    const { status, stdout, stderr } = runCli(['ask', '--store', demoStore(), '--json', '--max-tokens', '8', questions[1].question_text]);
    expect(status, stderr).toBe(0);
    const result = JSON.parse(stdout) as QueryResult;
    expect(result.strategy).toBe('packet');
    expect(result.tokens.generatedTokens).toBeGreaterThan(0);
    expect(result.citations.length).toBe(3);
    for (const citation of result.citations) expect(citation.documentId).toMatch(/^hotpotqa:/);
  });

  it('ask streams the answer, then numbered sources', () => {
    const { questions } = hotpotCorpus(1);
    const { status, stdout, stderr } = runCli(['ask', '--store', demoStore(), '--strategy', 'full', '--top-k', '2', '--max-tokens', '8', questions[0].question_text]);
    expect(status, stderr).toBe(0);
    expect(stdout).toMatch(/\n\n\[1\] .+ \(hotpotqa:.+, characters \d+-\d+, score -?\d\.\d{3}/);
    expect(stdout).toMatch(/\n\[2\] /);
    expect(stdout).not.toMatch(/\n\[3\] /);
    expect(stdout).toContain('full: first token ');
  });

  it('ask names a missing store', () => {
    const { status, stderr } = runCli(['ask', '--store', path.join(cache, 'absent'), 'Who?']);
    expect(status).toBe(1);
    expect(stderr).toContain('store.json is missing');
    expect(stderr).toContain('[STORE_NOT_FOUND]');
  });
});

describe('shellQuote', () => {
  it('quotes single quotes for a POSIX shell', () => {
    const quoted = shellQuote(`{"question":"Who's there?"}`);
    expect(quoted).toBe(`'{"question":"Who'\\''s there?"}'`);
    const echoed = spawnSync('sh', ['-c', `printf %s ${quoted}`], { encoding: 'utf8' });
    expect(echoed.stdout).toBe(`{"question":"Who's there?"}`);
  });
});
