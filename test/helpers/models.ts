import path from 'node:path';
import { inject } from 'vitest';

/** Names of the model folders that the model suites' global setup builds. */
export type TestModel = 'stories260K' | 'llama-tiny' | 'qwen2-small';

export function testModelDir(name: TestModel): string {
  return path.join(inject('modelsDir'), name);
}
