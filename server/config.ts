import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { Ajv, type ErrorObject } from 'ajv';
import { describeSchemaProblem } from '../common/schema-issues.js';
import { KvpackError } from '../common/errors.js';
import { strategies } from '../packets/strategies.js';
import { DEFAULT_SUMMARY_THRESHOLD } from '../query/pipeline.js';

const logLevels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/**
 * The server configuration: one JSON schema with every option, its unit and its default.
 * `docs/configuration.md` is generated from it (see `config-doc.ts`).
 */
export const serverConfigSchema = Type.Object(
  {
    store: Type.String({
      minLength: 1,
      description: 'Store folder (store.json, catalog.sqlite, index/, packets/). Created empty when it does not exist. Required.',
    }),
    model: Type.Optional(
      Type.String({
        minLength: 1,
        description: 'Model folder (config.json, tokenizer.json, onnx/model.onnx). Unset: the default model stories260K, converted into the cache folder on first use.',
      }),
    ),
    adapter: Type.Optional(
      Type.String({
        minLength: 1,
        description: 'Adapter file that the `packet` strategy splices with (ingestion also builds its packets), or `none`. Unset: the model\'s shipped adapter when one beat naive concatenation on held-out data, else naive packets.',
      }),
    ),
    embedder: Type.String({
      minLength: 1,
      default: 'hashed',
      description: 'Embedder of a store that the server creates: `hashed`, or `transformers:DIR` for a sentence-embedding model folder. An existing store keeps the embedder it was built with.',
    }),
    host: Type.String({ minLength: 1, default: '127.0.0.1', description: 'Address to listen on. Use `0.0.0.0` to accept connections from other hosts.' }),
    port: Type.Integer({ minimum: 0, maximum: 65535, default: 8080, description: 'TCP port to listen on; 0 picks a free port.' }),
    apiToken: Type.Optional(
      Type.String({
        minLength: 16,
        description: 'Bearer token that write routes (`POST /v1/documents`, `DELETE /v1/documents/:id`) require, at least 16 characters. Unset: write routes are open. It has no flag, so that it stays out of process listings.',
      }),
    ),
    logLevel: Type.Union(
      logLevels.map((level) => Type.Literal(level)),
      { default: 'info', description: 'pino log level.' },
    ),
    maxBodyBytes: Type.Integer({ minimum: 1024, default: 1_048_576, description: 'Maximum size of a JSON request body, in bytes.' }),
    maxUploadBytes: Type.Integer({ minimum: 1024, default: 16_777_216, description: 'Maximum size of one file in a multipart upload to `POST /v1/documents`, in bytes.' }),
    maxQuestionChars: Type.Integer({
      minimum: 1,
      default: 2000,
      description: 'Maximum question length, in characters. A question within this limit is still rejected when its tokens do not fit the model context window.',
    }),
    maxConcurrentGenerations: Type.Integer({
      minimum: 1,
      default: 2,
      description: 'Maximum queries generating at the same time. A query beyond this gets 429 at once, because there is no queue.',
    }),
    retryAfterSeconds: Type.Integer({ minimum: 1, default: 1, description: 'Seconds sent in the Retry-After header of a 429 response.' }),
    defaultTopK: Type.Integer({ minimum: 1, default: 3, description: 'Chunks retrieved when a query does not set `topK`.' }),
    maxTopK: Type.Integer({ minimum: 1, default: 16, description: 'Maximum `topK` a query may set.' }),
    defaultMaxTokens: Type.Integer({ minimum: 1, default: 64, description: 'Tokens generated at most when a query does not set `maxTokens`.' }),
    maxGeneratedTokens: Type.Integer({ minimum: 1, default: 256, description: 'Maximum `maxTokens` a query may set.' }),
    defaultStrategy: Type.Union(
      strategies.map((strategy) => Type.Literal(strategy)),
      { default: 'packet', description: 'Strategy used when a query does not set `strategy`.' },
    ),
    summaryThreshold: Type.Number({
      minimum: -1,
      maximum: 1,
      default: DEFAULT_SUMMARY_THRESHOLD,
      description: 'Retrieved chunks whose cosine relevance score is below this go into the context as their summary packet.',
    }),
    epicTokens: Type.Integer({ minimum: 0, default: 4, description: 'Tokens that the `epic` strategy recomputes at the start of each chunk.' }),
    prefixCacheBytes: Type.Integer({ minimum: 0, default: 67_108_864, description: 'Memory for the prefix cache (preamble and `prefix` prompts), in bytes; 0 disables it.' }),
    threads: Type.Integer({ minimum: 0, default: 0, description: 'onnxruntime threads per operator; 0 lets onnxruntime choose.' }),
    maxQueuedJobs: Type.Integer({
      minimum: 1,
      default: 8,
      description: 'Maximum ingestion jobs queued or running at the same time. A job beyond this gets 429. Jobs run one at a time.',
    }),
    retainedJobs: Type.Integer({ minimum: 1, default: 100, description: 'Finished ingestion jobs whose status `GET /v1/jobs/:id` still reports.' }),
    shutdownGraceMs: Type.Integer({
      minimum: 0,
      default: 10_000,
      description: 'On SIGTERM, milliseconds that in-flight queries may take to finish before they are cancelled.',
    }),
  },
  { additionalProperties: false },
);

export type ServerConfig = Readonly<Static<typeof serverConfigSchema>>;
export type ServerConfigKey = keyof Static<typeof serverConfigSchema>;

/** Prefix of the environment variables that set options: `port` is `KVPACK_PORT`, `apiToken` is `KVPACK_API_TOKEN`. */
export const ENV_PREFIX = 'KVPACK_';

/** `KVPACK_*` variables that are not server options but are read elsewhere, so they are not rejected. */
export const otherEnvVariables: readonly string[] = ['KVPACK_CONFIG', 'KVPACK_CACHE_DIR', 'KVPACK_SHARED_DIR'];

/** Sources of the configuration. Later sources override earlier ones. */
export interface ConfigSources {
  /** JSON file with option keys (`--config FILE`, else `KVPACK_CONFIG`). */
  file?: string;
  /** Environment; only `KVPACK_*` variables are read. Default: none. */
  env?: Readonly<Record<string, string | undefined>>;
  /** Command-line flags; undefined values are ignored. */
  flags?: Partial<Record<ServerConfigKey, unknown>>;
}

type Origin = string;

/** Returns the environment variable that sets `key`. */
export function envVariableOf(key: string): string {
  return ENV_PREFIX + key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
}

const optionKeys = Object.keys(serverConfigSchema.properties) as ServerConfigKey[];
const keyByEnvVariable = new Map(optionKeys.map((key) => [envVariableOf(key), key]));

const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: true });
const validateSchema = ajv.compile(serverConfigSchema);

/**
 * Builds the configuration once at start: schema defaults, then the config file, then `KVPACK_*`
 * environment variables, then flags. Unknown keys and variables and invalid values raise
 * CONFIG_INVALID naming each of them and where it came from. The result is frozen.
 */
export function loadServerConfig(sources: ConfigSources = {}): ServerConfig {
  const merged: Record<string, unknown> = {};
  const origins = new Map<string, Origin>();
  const apply = (values: Record<string, unknown>, origin: (key: string) => Origin) => {
    for (const [key, value] of Object.entries(values)) {
      if (value === undefined) continue;
      merged[key] = value;
      origins.set(key, origin(key));
    }
  };

  const configFile = sources.file ?? sources.env?.KVPACK_CONFIG;
  if (configFile) {
    apply(readConfigFile(configFile), () => `config file ${configFile}`);
  }
  apply(readEnvironment(sources.env ?? {}), (key) => `environment variable ${envVariableOf(key)}`);
  apply(sources.flags ?? {}, (key) => `flag --${key.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`)}`);

  if (!validateSchema(merged)) {
    throw new KvpackError('CONFIG_INVALID', `Invalid server configuration: ${describeErrors(validateSchema.errors ?? [], merged, origins)}`, {
      errors: validateSchema.errors,
    });
  }
  const config = merged as Static<typeof serverConfigSchema>;
  checkRelations(config);
  return Object.freeze(config);
}

/** Returns the configuration with the API token masked, for logging. */
export function redactConfig(config: ServerConfig): Record<string, unknown> {
  return { ...config, apiToken: config.apiToken === undefined ? undefined : '[set]' };
}

function readConfigFile(file: string): Record<string, unknown> {
  const resolved = path.resolve(file);
  if (!existsSync(resolved)) {
    throw new KvpackError('CONFIG_INVALID', `Config file ${resolved} does not exist; check the --config path or KVPACK_CONFIG.`, { file: resolved });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(resolved, 'utf8'));
  } catch (error) {
    throw new KvpackError('CONFIG_INVALID', `Config file ${resolved} is not valid JSON: ${(error as Error).message}.`, { file: resolved });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new KvpackError('CONFIG_INVALID', `Config file ${resolved} must contain a JSON object of options, not ${describeJsonType(parsed)}.`, { file: resolved });
  }
  const unknown = Object.keys(parsed).filter((key) => !optionKeys.includes(key as ServerConfigKey));
  if (unknown.length > 0) {
    throw new KvpackError(
      'CONFIG_INVALID',
      `Config file ${resolved} has unknown option(s) ${unknown.join(', ')}; known options: ${optionKeys.join(', ')}.`,
      { file: resolved, unknown },
    );
  }
  return parsed as Record<string, unknown>;
}

/** Reads `KVPACK_*` variables, converting numbers by the option's schema type. */
function readEnvironment(env: Readonly<Record<string, string | undefined>>): Record<string, unknown> {
  const values: Record<string, unknown> = {};
  const unknown: string[] = [];
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith(ENV_PREFIX) || raw === undefined || otherEnvVariables.includes(name)) continue;
    const key = keyByEnvVariable.get(name);
    if (!key) {
      unknown.push(name);
      continue;
    }
    values[key] = parseEnvValue(name, raw, serverConfigSchema.properties[key]);
  }
  if (unknown.length > 0) {
    const known = [...keyByEnvVariable.keys(), ...otherEnvVariables].join(', ');
    throw new KvpackError('CONFIG_INVALID', `Unknown environment variable(s) ${unknown.join(', ')}; known KVPACK_ variables: ${known}. Unset or rename them.`, {
      unknown,
    });
  }
  return values;
}

function parseEnvValue(name: string, raw: string, schema: TSchema): unknown {
  if (schema.type !== 'integer' && schema.type !== 'number') {
    return raw;
  }
  const value = raw.trim() === '' ? Number.NaN : Number(raw);
  if (!Number.isFinite(value)) {
    throw new KvpackError('CONFIG_INVALID', `Invalid server configuration: environment variable ${name} must be a number, got ${JSON.stringify(raw)}.`, {
      variable: name,
    });
  }
  return value;
}

function describeErrors(errors: ErrorObject[], values: Record<string, unknown>, origins: Map<string, Origin>): string {
  const lines = errors.map((error) => {
    if (error.keyword === 'required') {
      const key = String(error.params.missingProperty);
      return `${key} is required: set it with --${key}, ${envVariableOf(key)} or the config file.`;
    }
    if (error.keyword === 'additionalProperties') {
      const key = String(error.params.additionalProperty);
      return `unknown option ${key} (from ${origins.get(key) ?? 'the input'}); known options: ${optionKeys.join(', ')}.`;
    }
    const key = error.instancePath.split('/')[1] ?? '';
    const problem = error.keyword === 'anyOf' ? `must be one of ${allowedValues(key).join(', ')}` : describeSchemaProblem(error);
    return `${key} ${problem}, got ${JSON.stringify(values[key])} (from ${origins.get(key) ?? 'the default'}).`;
  });
  // A union reports one error per branch plus one for the union; keep the union's line only.
  const unionKeys = new Set(errors.filter((error) => error.keyword === 'anyOf').map((error) => error.instancePath));
  return lines.filter((_, i) => errors[i].keyword === 'anyOf' || !unionKeys.has(errors[i].instancePath)).join(' ');
}

function allowedValues(key: string): string[] {
  const schema = serverConfigSchema.properties[key as ServerConfigKey] as TSchema | undefined;
  const branches = (schema?.anyOf ?? []) as TSchema[];
  return branches.map((branch) => JSON.stringify(branch.const));
}

function checkRelations(config: Static<typeof serverConfigSchema>): void {
  if (config.defaultTopK > config.maxTopK) {
    throw new KvpackError('CONFIG_INVALID', `Invalid server configuration: defaultTopK ${config.defaultTopK} is larger than maxTopK ${config.maxTopK}.`);
  }
  if (config.defaultMaxTokens > config.maxGeneratedTokens) {
    throw new KvpackError(
      'CONFIG_INVALID',
      `Invalid server configuration: defaultMaxTokens ${config.defaultMaxTokens} is larger than maxGeneratedTokens ${config.maxGeneratedTokens}.`,
    );
  }
}

function describeJsonType(value: unknown): string {
  if (Array.isArray(value)) return 'an array';
  if (value === null) return 'null';
  return `a ${typeof value}`;
}
