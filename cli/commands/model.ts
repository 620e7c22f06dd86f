import type { Command } from 'commander';
import { parameterCount } from '../../inference/architecture.js';
import { importLlama2c, initRandomModel, resolveArchitecture } from '../../inference/model-builders.js';
import { architecturePresets } from '../../inference/presets.js';
import { integerOption } from '../options.js';

export function registerModelCommands(program: Command): void {
  const model = program.command('model').description('Create model folders (config.json, tokenizer.json, onnx/model.onnx).');

  model
    .command('import-llama2c')
    .description('Convert a llama2.c legacy checkpoint and its tokenizer into a model folder.')
    .requiredOption('--checkpoint <file>', 'llama2.c checkpoint (.bin)')
    .requiredOption('--tokenizer <file>', 'llama2.c tokenizer (.bin, such as tok512.bin)')
    .requiredOption('--out <dir>', 'output model folder (created; must be empty unless --force)')
    .option('--force', 'replace a non-empty output folder', false)
    .action(async (options: { checkpoint: string; tokenizer: string; out: string; force: boolean }) => {
      const arch = await importLlama2c(options.checkpoint, options.tokenizer, options.out, { overwrite: options.force });
      process.stdout.write(
        `Wrote ${options.out}: ${arch.modelType}, ${arch.numLayers} layers, hidden ${arch.hiddenSize}, ` +
          `vocab ${arch.vocabSize}, ${parameterCount(arch).toLocaleString('en-US')} parameters.\n`,
      );
    });

  model
    .command('init-random')
    .description('Build a model folder with random weights of any Llama or Qwen2 shape, the same for the same seed.')
    .requiredOption(
      '--config <json|file|preset>',
      `architecture: inline Hugging Face config JSON, a config.json path, or a preset (${Object.keys(architecturePresets).join(', ')})`,
    )
    .option('--seed <n>', 'random seed', integerOption(0), 0)
    .requiredOption('--out <dir>', 'output model folder (created; must be empty unless --force)')
    .option('--tokenizer-from <dir>', 'copy the tokenizer of this model folder instead of writing a byte-level one')
    .option('--force', 'replace a non-empty output folder', false)
    .action(async (options: { config: string; seed: number; out: string; tokenizerFrom?: string; force: boolean }) => {
      const arch = resolveArchitecture(options.config);
      await initRandomModel(arch, options.seed, options.out, { tokenizerFrom: options.tokenizerFrom, overwrite: options.force });
      process.stdout.write(
        `Wrote ${options.out}: random ${arch.modelType}, seed ${options.seed}, ` +
          `${parameterCount(arch).toLocaleString('en-US')} parameters.\n`,
      );
    });
}
