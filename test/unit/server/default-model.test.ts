import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isKvpackError, type ErrorCode } from '../../../common/errors.js';
import { downloadVerified, resolveDefaultModel, stories260kFiles, verifyModelFile, type ModelFileSpec } from '../../../inference/default-model.js';

const dir = mkdtempSync(path.join(tmpdir(), 'kvpack-default-model-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const payload = Buffer.from('bytes of a small published model file');
const spec: ModelFileSpec = {
  name: 'model.bin',
  url: 'https://models.invalid/model.bin',
  sha256: createHash('sha256').update(payload).digest('hex'),
  bytes: payload.length,
};

/** Creates a fetch that serves bytes from memory and records the requested URLs. Nothing leaves the process. */
function memoryFetch(body: Uint8Array, status = 200): { fetch: typeof fetch; urls: string[] } {
  const urls: string[] = [];
  const fake = (async (input: string | URL | Request) => {
    urls.push(String(input));
    return new Response(status === 200 ? body : null, { status });
  }) as typeof fetch;
  return { fetch: fake, urls };
}

async function rejection(promise: Promise<unknown>, code: ErrorCode): Promise<string> {
  try {
    await promise;
  } catch (error) {
    expect(isKvpackError(error, code), String(error)).toBe(true);
    return (error as Error).message;
  }
  throw new Error(`expected ${code}`);
}

describe('downloadVerified', () => {
  it('keeps a download with the published checksum', async () => {
    const target = path.join(dir, 'good');
    mkdirSync(target);
    const { fetch, urls } = memoryFetch(payload);
    const file = await downloadVerified(spec, target, { fetch });
    expect(urls).toEqual([spec.url]);
    expect(readFileSync(file)).toEqual(payload);
  });

  it('reuses a verified copy without fetching', async () => {
    const target = path.join(dir, 'cached');
    mkdirSync(target);
    writeFileSync(path.join(target, spec.name), payload);
    const { fetch, urls } = memoryFetch(Buffer.from('other'));
    await downloadVerified(spec, target, { fetch });
    expect(urls).toEqual([]);
  });

  it('discards a download with another checksum', async () => {
    const target = path.join(dir, 'tampered');
    mkdirSync(target);
    const { fetch } = memoryFetch(Buffer.from('tampered bytes'));
    const message = await rejection(downloadVerified(spec, target, { fetch }), 'MODEL_CHECKSUM_MISMATCH');
    expect(message).toContain(`is published with ${spec.sha256}; it was discarded`);
    expect(readdirSync(target)).toEqual([]);
  });

  it('reports an HTTP error', async () => {
    const target = path.join(dir, 'missing');
    mkdirSync(target);
    const { fetch } = memoryFetch(payload, 404);
    const message = await rejection(downloadVerified(spec, target, { fetch }), 'MODEL_DOWNLOAD_FAILED');
    expect(message).toBe(`Failed to download ${spec.url}: HTTP 404. Retry later, or pass --model DIR.`);
  });
});

describe('resolveDefaultModel', () => {
  it('rejects a local checkpoint with another checksum', async () => {
    const source = path.join(dir, 'corrupt-source');
    mkdirSync(source);
    writeFileSync(path.join(source, stories260kFiles.checkpoint.name), 'not the checkpoint');
    writeFileSync(path.join(source, stories260kFiles.tokenizer.name), 'not the tokenizer');
    const cache = path.join(dir, 'cache-corrupt');
    const message = await rejection(resolveDefaultModel({ cacheDir: cache, sourceDir: source }), 'MODEL_CHECKSUM_MISMATCH');
    expect(message).toContain(`stories260K.bin is published with ${stories260kFiles.checkpoint.sha256}`);
    expect(existsSync(path.join(cache, 'models', 'stories260K'))).toBe(false);
  });

  it('downloads into the cache when no local copy exists', async () => {
    const cache = path.join(dir, 'cache-download');
    const { fetch, urls } = memoryFetch(Buffer.from('not the checkpoint'));
    const message = await rejection(resolveDefaultModel({ cacheDir: cache, sourceDir: null, fetch }), 'MODEL_CHECKSUM_MISMATCH');
    expect(urls).toEqual([stories260kFiles.checkpoint.url]);
    expect(message).toContain('stories260K.bin');
    expect(readdirSync(path.join(cache, 'downloads', 'stories260K'))).toEqual([]);
  });
});

describe('verifyModelFile', () => {
  it('names a missing file', async () => {
    const message = await rejection(verifyModelFile(path.join(dir, 'absent.bin'), spec), 'MODEL_NOT_FOUND');
    expect(message).toContain('absent.bin does not exist');
  });
});
