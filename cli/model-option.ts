import { resolveDefaultModel } from '../inference/default-model.js';

/** The environment variable naming the model folder when a command gets no --model. */
export const MODEL_ENV = 'KVPACK_MODEL';

/** Help text of every command's --model option. */
export function modelOptionHelp(purpose = 'model folder'): string {
  return `${purpose} (default: $${MODEL_ENV}, else stories260K, converted into the cache folder on first use)`;
}

/** Resolves --model: the option, else $KVPACK_MODEL, else the default model. */
export async function resolveModelOption(option: string | undefined, log: (line: string) => void = (line) => process.stderr.write(`${line}\n`)): Promise<string> {
  return option ?? process.env[MODEL_ENV] ?? (await resolveDefaultModel({ log }));
}
