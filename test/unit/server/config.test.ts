import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isKvpackError } from '../../../common/errors.js';
import { envVariableOf, loadServerConfig, redactConfig, serverConfigSchema } from '../../../server/config.js';
import { configurationDocPath, renderConfigurationDoc } from '../../../server/config-doc.js';

const dir = mkdtempSync(path.join(tmpdir(), 'kvpack-config-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function writeConfig(name: string, content: unknown): string {
  const file = path.join(dir, name);
  writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content));
  return file;
}

function configError(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    expect(isKvpackError(error, 'CONFIG_INVALID')).toBe(true);
    return (error as Error).message;
  }
  throw new Error('expected CONFIG_INVALID');
}

describe('loadServerConfig', () => {
  it('fills every default from the schema', () => {
    const config = loadServerConfig({ flags: { store: 'stores/a' } });
    for (const [key, schema] of Object.entries(serverConfigSchema.properties)) {
      if ((schema as { default?: unknown }).default !== undefined) {
        expect(config[key as keyof typeof config], key).toEqual((schema as { default?: unknown }).default);
      }
    }
    expect(config.host).toBe('127.0.0.1');
    expect(config.apiToken).toBeUndefined();
  });

  it('returns a frozen object', () => {
    const config = loadServerConfig({ flags: { store: 'stores/a' } });
    expect(Object.isFrozen(config)).toBe(true);
  });

  it('applies file, then environment, then flags', () => {
    const file = writeConfig('precedence.json', { store: 'from-file', port: 9001, host: '0.0.0.0', maxTopK: 8 });
    const config = loadServerConfig({
      file,
      env: { KVPACK_PORT: '9002', KVPACK_HOST: '::1' },
      flags: { host: 'localhost', port: undefined },
    });
    expect(config.store).toBe('from-file');
    expect(config.maxTopK).toBe(8);
    expect(config.port).toBe(9002);
    expect(config.host).toBe('localhost');
  });

  it('reads the file named by KVPACK_CONFIG', () => {
    const file = writeConfig('from-env.json', { store: 'named-by-env' });
    expect(loadServerConfig({ env: { KVPACK_CONFIG: file } }).store).toBe('named-by-env');
  });

  it('rejects an unknown key in the file', () => {
    const file = writeConfig('unknown.json', { store: 'a', prot: 80 });
    const message = configError(() => loadServerConfig({ file }));
    expect(message).toContain('unknown option(s) prot');
    expect(message).toContain(file);
  });

  it('rejects an unknown KVPACK_ variable', () => {
    const message = configError(() => loadServerConfig({ env: { KVPACK_STORE: 'a', KVPACK_PROT: '80', HOME: '/root' } }));
    expect(message).toContain('Unknown environment variable(s) KVPACK_PROT');
    expect(message).not.toContain('HOME');
  });

  it('allows the other KVPACK_ variables', () => {
    const config = loadServerConfig({ env: { KVPACK_STORE: 'a', KVPACK_CACHE_DIR: '/tmp/c', KVPACK_SHARED_DIR: '/tmp/s' } });
    expect(config.store).toBe('a');
  });

  it('names the value and its source', () => {
    const message = configError(() => loadServerConfig({ env: { KVPACK_STORE: 'a', KVPACK_PORT: '70000' } }));
    expect(message).toContain('port must be <= 65535');
    expect(message).toContain('70000');
    expect(message).toContain('environment variable KVPACK_PORT');
  });

  it('rejects text where a number belongs', () => {
    const message = configError(() => loadServerConfig({ env: { KVPACK_STORE: 'a', KVPACK_MAX_BODY_BYTES: 'lots' } }));
    expect(message).toContain('KVPACK_MAX_BODY_BYTES must be a number, got "lots"');
  });

  it('lists the allowed values of an enum', () => {
    const message = configError(() => loadServerConfig({ flags: { store: 'a', defaultStrategy: 'fast' } }));
    expect(message).toContain('defaultStrategy must be one of "full", "prefix", "naive", "epic", "packet"');
    expect(message).toContain('flag --default-strategy');
  });

  it('rejects a file value of the wrong type', () => {
    const file = writeConfig('wrong-type.json', { store: 'a', port: '8080' });
    const message = configError(() => loadServerConfig({ file }));
    expect(message).toContain('port must be of type integer');
    expect(message).toContain(`config file ${file}`);
  });

  it('requires the store', () => {
    const message = configError(() => loadServerConfig({}));
    expect(message).toContain('store is required: set it with --store, KVPACK_STORE or the config file');
  });

  it('rejects a default above its maximum', () => {
    const message = configError(() => loadServerConfig({ flags: { store: 'a', defaultTopK: 20 } }));
    expect(message).toContain('defaultTopK 20 is larger than maxTopK 16');
  });

  it('rejects a short API token', () => {
    const message = configError(() => loadServerConfig({ env: { KVPACK_STORE: 'a', KVPACK_API_TOKEN: 'short' } }));
    expect(message).toContain('apiToken must have at least 16 characters');
  });

  it('rejects a file that is not JSON', () => {
    const file = writeConfig('broken.json', '{ "store": ');
    expect(configError(() => loadServerConfig({ file }))).toContain('is not valid JSON');
  });

  it('rejects a missing file', () => {
    expect(configError(() => loadServerConfig({ file: path.join(dir, 'absent.json') }))).toContain('does not exist');
  });

  it('redacts the API token', () => {
    const config = loadServerConfig({ env: { KVPACK_STORE: 'a', KVPACK_API_TOKEN: 'a-very-secret-token' } });
    expect(JSON.stringify(redactConfig(config))).not.toContain('a-very-secret-token');
  });

  it('maps camel case to environment names', () => {
    expect(envVariableOf('apiToken')).toBe('KVPACK_API_TOKEN');
    expect(envVariableOf('maxConcurrentGenerations')).toBe('KVPACK_MAX_CONCURRENT_GENERATIONS');
  });
});

describe('docs/configuration.md', () => {
  it('matches the schema', () => {
    const message = 'docs/configuration.md is out of date; regenerate it with: node --import tsx server/config-doc.ts';
    expect(readFileSync(configurationDocPath, 'utf8'), message).toBe(renderConfigurationDoc());
  });

  it('lists every option', () => {
    const doc = renderConfigurationDoc();
    for (const key of Object.keys(serverConfigSchema.properties)) {
      expect(doc, key).toContain(`| \`${key}\` | \`${envVariableOf(key)}\` |`);
    }
  });
});
