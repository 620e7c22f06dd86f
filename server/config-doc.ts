import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TSchema } from '@sinclair/typebox';
import { packageRoot } from '../common/paths.js';
import { envVariableOf, otherEnvVariables, serverConfigSchema } from './config.js';

/** Server options that `kvpack serve` also takes as flags. */
export const serveFlags: Readonly<Record<string, string>> = {
  store: '--store DIR',
  model: '--model DIR',
  adapter: '--adapter FILE',
  host: '--host ADDR',
  port: '--port N',
  logLevel: '--log-level LEVEL',
};

export const configurationDocPath = path.join(packageRoot, 'docs', 'configuration.md');

/** Renders docs/configuration.md from the configuration schema, so defaults never drift from the code. */
export function renderConfigurationDoc(): string {
  const required = new Set<string>(serverConfigSchema.required ?? []);
  const rows = Object.entries(serverConfigSchema.properties).map(([key, schema]) => {
    const option = schema as TSchema;
    const flag = serveFlags[key] ? `\`${serveFlags[key]}\`` : '';
    const cells = [`\`${key}\``, `\`${envVariableOf(key)}\``, flag, typeOf(option), defaultOf(option, required.has(key)), escapeCell(String(option.description ?? ''))];
    return `| ${cells.join(' | ')} |`;
  });
  return [
    '# Server configuration',
    '',
    '<!-- Generated from server/config.ts by `node --import tsx server/config-doc.ts`; do not edit by hand. -->',
    '',
    '`kvpack serve` and `kvpack demo` read their configuration once at start and validate it against one',
    'strict schema. Sources, from lowest to highest precedence:',
    '',
    '1. the defaults below;',
    '2. a JSON file of options, named by `--config FILE` or else `KVPACK_CONFIG`;',
    '3. environment variables: `KVPACK_` followed by the option name in upper snake case',
    '   (`maxBodyBytes` is `KVPACK_MAX_BODY_BYTES`); numbers are parsed from the text;',
    '4. command-line flags.',
    '',
    'An unknown key in the file, an unknown `KVPACK_*` environment variable or a value of the wrong',
    'type or range stops the start with `CONFIG_INVALID` and a message that names it and its source.',
    `Besides the options, these variables are read and allowed: ${otherEnvVariables.map((name) => `\`${name}\``).join(', ')}`,
    '(the config file, the cache folder for converted models, and the shared assets folder).',
    '',
    'Example file:',
    '',
    '```json',
    '{ "store": "stores/wiki", "port": 9000, "maxConcurrentGenerations": 4 }',
    '```',
    '',
    '| Option | Environment variable | Flag | Type | Default | Description |',
    '|---|---|---|---|---|---|',
    ...rows,
    '',
  ].join('\n');
}

function typeOf(schema: TSchema): string {
  if (Array.isArray(schema.anyOf)) {
    return (schema.anyOf as TSchema[]).map((branch) => `\`${String(branch.const)}\``).join(', ');
  }
  const range: string[] = [];
  if (schema.minimum !== undefined) range.push(`≥ ${schema.minimum}`);
  if (schema.maximum !== undefined) range.push(`≤ ${schema.maximum}`);
  if (schema.minLength !== undefined && schema.minLength > 1) range.push(`≥ ${schema.minLength} characters`);
  return range.length > 0 ? `${schema.type} (${range.join(', ')})` : String(schema.type);
}

function defaultOf(schema: TSchema, required: boolean): string {
  if (schema.default !== undefined) return `\`${JSON.stringify(schema.default)}\``;
  return required ? 'required' : 'unset';
}

function escapeCell(text: string): string {
  return text.replace(/\|/g, '\\|');
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  writeFileSync(configurationDocPath, renderConfigurationDoc());
  process.stdout.write(`Wrote ${configurationDocPath}\n`);
}
