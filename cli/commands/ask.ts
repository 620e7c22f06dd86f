import { InvalidArgumentError, type Command } from 'commander';
import { InferenceEngine } from '../../inference/engine.js';
import { ChunkStore } from '../../ingest/store.js';
import { expectedModelOf, resolveAdapter } from '../../packets/adapter.js';
import { strategies, type Strategy } from '../../packets/strategies.js';
import { QueryPipeline } from '../../query/pipeline.js';
import type { QueryResult } from '../../query/types.js';
import { StoreRetriever } from '../../query/store-retriever.js';
import { modelOptionHelp, resolveModelOption } from '../model-option.js';
import { integerOption, numberOption } from '../options.js';

interface AskCommandOptions {
  store: string;
  model?: string;
  adapter?: string;
  json: boolean;
  strategy: Strategy;
  topK: number;
  maxTokens: number;
  temperature: number;
  seed: number;
  threads: number;
}

export function registerAskCommand(program: Command): void {
  program
    .command('ask')
    .description('Answer QUESTION from a store locally, without a server: the answer streams to stdout, then its sources.')
    .argument('<question>', 'the question')
    .requiredOption('--store <dir>', 'store folder built by kvpack ingest, kvpack serve or kvpack demo')
    .option('--model <dir>', modelOptionHelp('model folder the store was built with'))
    .option('--adapter <file>', "adapter file for the packet strategy, or none (default: the model's shipped adapter when one beat naive concatenation)")
    .option('--json', 'print the whole result (answer, citations, timings, token accounting) as JSON', false)
    .option('--strategy <name>', `how the context cache is built: ${strategies.join(', ')}`, parseStrategy, 'packet')
    .option('--top-k <n>', 'chunks to retrieve', integerOption(1), 3)
    .option('--max-tokens <n>', 'tokens to generate at most', integerOption(1), 64)
    .option('--temperature <t>', 'sampling temperature; 0 is greedy', numberOption(0, 2), 0)
    .option('--seed <n>', 'sampling seed', integerOption(0), 0)
    .option('--threads <n>', 'onnxruntime threads per operator; 0 lets onnxruntime choose', integerOption(0), 0)
    .action(async (question: string, options: AskCommandOptions) => {
      const result = await askQuestion(question, options);
      process.stdout.write(options.json ? `${JSON.stringify(result, null, 2)}\n` : formatSources(result));
    });
}

async function askQuestion(question: string, options: AskCommandOptions): Promise<QueryResult> {
  const modelDir = await resolveModelOption(options.model);
  const engine = await InferenceEngine.load(modelDir, { threads: options.threads });
  let store: ChunkStore | undefined;
  const controller = new AbortController();
  const onInterrupt = () => controller.abort();
  process.once('SIGINT', onInterrupt);
  try {
    store = await ChunkStore.open(options.store, {
      mode: 'read',
      model: { modelFingerprint: engine.modelFingerprint, tokenizerFingerprint: engine.tokenizerFingerprint },
    });
    const adapter = resolveAdapter(options.adapter, expectedModelOf(engine)).vectors;
    const pipeline = new QueryPipeline({ engine, retriever: new StoreRetriever(store), packets: store.packets, adapter });
    return await pipeline.answer(
      { question, strategy: options.strategy, topK: options.topK, maxTokens: options.maxTokens, temperature: options.temperature, seed: options.seed },
      { signal: controller.signal, onToken: options.json ? undefined : (text) => process.stdout.write(text) },
    );
  } finally {
    process.off('SIGINT', onInterrupt);
    await store?.close();
    await engine.release();
  }
}

/** Formats the lines printed after the streamed answer text: numbered sources, then timings and token accounting. */
export function formatSources(result: QueryResult): string {
  const lines = ['', ''];
  if (result.citations.length === 0) {
    lines.push('No sources: the store returned no chunk for this question.');
  }
  result.citations.forEach((citation, i) => {
    const packet = citation.packet === 'summary' ? ', summary' : '';
    lines.push(`[${i + 1}] ${citation.title || citation.documentId} (${citation.documentId}, characters ${citation.span.start}-${citation.span.end}, score ${citation.score.toFixed(3)}${packet})`);
  });
  const { timings, tokens } = result;
  lines.push(
    `${result.strategy}: first token ${timings.timeToFirstTokenMs.toFixed(1)} ms, total ${timings.totalMs.toFixed(1)} ms; ` +
      `${tokens.splicedTokens} context tokens spliced, ${tokens.computedTokens} computed (${(tokens.prefillComputeAvoided * 100).toFixed(0)}% of prefill avoided); finished: ${result.finishReason}`,
    '',
  );
  return lines.join('\n');
}

function parseStrategy(value: string): Strategy {
  if (!(strategies as readonly string[]).includes(value)) {
    throw new InvalidArgumentError(`expected one of ${strategies.join(', ')}, got ${JSON.stringify(value)}.`);
  }
  return value as Strategy;
}
