#!/usr/bin/env node
import { Command } from 'commander';
import { isKvpackError } from '../common/errors.js';
import { registerAdapterCommands } from './commands/adapter.js';
import { registerAskCommand } from './commands/ask.js';
import { registerBenchCommand } from './commands/bench.js';
import { registerDemoCommand } from './commands/demo.js';
import { registerGenerateCommand } from './commands/generate.js';
import { registerIngestCommand } from './commands/ingest.js';
import { registerModelCommands } from './commands/model.js';
import { registerServeCommand } from './commands/serve.js';

const program = new Command();
program
  .name('kvpack')
  .description('RAG server that splices precomputed KV packets into the model cache instead of recomputing retrieved passages.')
  .version('0.1.0')
  .showHelpAfterError();

registerModelCommands(program);
registerGenerateCommand(program);
registerIngestCommand(program);
registerAdapterCommands(program);
registerServeCommand(program);
registerAskCommand(program);
registerDemoCommand(program);
registerBenchCommand(program);

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (isKvpackError(error)) {
    process.stderr.write(`kvpack: ${error.message} [${error.code}]\n`);
    process.exitCode = 1;
  } else {
    throw error;
  }
}
