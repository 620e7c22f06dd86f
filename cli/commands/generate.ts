import type { Command } from 'commander';
import { InferenceEngine } from '../../inference/engine.js';
import { generateFromPrompt } from '../../inference/generate.js';
import { modelOptionHelp, resolveModelOption } from '../model-option.js';
import { collect, integerOption, numberOption } from '../options.js';

interface GenerateCommandOptions {
  model?: string;
  maxTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
  stop: string[];
  threads: number;
}

export function registerGenerateCommand(program: Command): void {
  program
    .command('generate')
    .description('Stream a continuation of PROMPT to stdout; an empty PROMPT decodes from BOS alone.')
    .argument('[prompt]', 'text to continue', '')
    .option('--model <dir>', modelOptionHelp())
    .option('--max-tokens <n>', 'maximum tokens to generate', integerOption(0), 128)
    .option('--temperature <t>', 'sampling temperature; 0 is greedy', numberOption(0), 0)
    .option('--top-k <k>', 'sample among the k most likely tokens; 0 disables', integerOption(0), 0)
    .option('--top-p <p>', 'nucleus sampling mass; 1 disables', numberOption(0, 1), 1)
    .option('--seed <n>', 'sampling seed', integerOption(0), 0)
    .option('--stop <text>', 'stop before this text (repeatable)', collect, [])
    .option('--threads <n>', 'onnxruntime threads per operator; 0 lets onnxruntime choose', integerOption(0), 0)
    .action(async (prompt: string, options: GenerateCommandOptions) => {
      const engine = await InferenceEngine.load(await resolveModelOption(options.model), { threads: options.threads });
      const controller = new AbortController();
      const onInterrupt = () => controller.abort();
      process.once('SIGINT', onInterrupt);
      try {
        const result = await generateFromPrompt(engine, prompt, {
          maxTokens: options.maxTokens,
          temperature: options.temperature,
          topK: options.topK,
          topP: options.topP,
          seed: options.seed,
          stopStrings: options.stop,
          signal: controller.signal,
          onToken: (event) => process.stdout.write(event.text),
        });
        process.stdout.write('\n');
        const rate = result.tokens.length / (result.totalMs / 1000);
        process.stderr.write(`[${result.tokens.length} tokens, ${rate.toFixed(1)} tokens/s, finished: ${result.finishReason}]\n`);
      } finally {
        process.off('SIGINT', onInterrupt);
        await engine.release();
      }
    });
}
